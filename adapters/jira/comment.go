package jira

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/url"
	"regexp"
	"strings"

	jira "github.com/andygrunwald/go-jira"

	qsync "github.com/qase-sync/qase-sync/sync"
)

// Comment stamps. Wiki markup has no hidden comments, so every posted
// comment ends with a small grey line
//
//	{color:#97a0af}qase-sync ref <id>{color}
//
// It is visible but unobtrusive, survives Cloud's wiki<->ADF conversion and
// lets HasComment find the comment by listing. Ids outside a conservative
// character set (or starting with "x:") are written as "x:<hex>" so that
// wiki markup (_ * + { } [ ] |) cannot mangle them.
const stampPrefix = "qase-sync ref "

var (
	stampRe     = regexp.MustCompile(`qase-sync ref ([A-Za-z0-9.:/-]+)`)
	stampSafeRe = regexp.MustCompile(`^[A-Za-z0-9.:/-]+$`)
)

func stampLine(id string) string {
	return "{color:#97a0af}" + stampPrefix + encodeStampID(id) + "{color}"
}

func encodeStampID(id string) string {
	if stampSafeRe.MatchString(id) && !strings.HasPrefix(id, "x:") {
		return id
	}
	return "x:" + hex.EncodeToString([]byte(id))
}

func decodeStampID(s string) string {
	if h, ok := strings.CutPrefix(s, "x:"); ok {
		if b, err := hex.DecodeString(h); err == nil {
			return string(b)
		}
	}
	return s
}

// commentStamp finds the stamp in a comment body (the last one wins: a
// human may quote another comment above it).
func commentStamp(body string) (string, bool) {
	ms := stampRe.FindAllStringSubmatch(body, -1)
	if len(ms) == 0 {
		return "", false
	}
	return decodeStampID(ms[len(ms)-1][1]), true
}

// StampedBody is the comment body AddComment posts for c.
func StampedBody(c qsync.Comment) string {
	body := strings.TrimRight(c.Body, "\n ")
	if body == "" {
		return stampLine(c.ID)
	}
	return body + "\n\n" + stampLine(c.ID)
}

// AddComment posts c with its stamp line.
func (t *Tracker) AddComment(ctx context.Context, ref qsync.IssueRef, c qsync.Comment) error {
	id := issueID(ref)
	if id == "" {
		return qsync.Permanentf("jira comment: issue ref has no id or key")
	}
	if c.ID == "" {
		return qsync.Permanentf("jira comment: comment has no id")
	}
	return t.call(ctx, "comment", nfGone, func(ctx context.Context) (*jira.Response, error) {
		_, resp, err := t.client.Issue.AddCommentWithContext(ctx, id, &jira.Comment{Body: StampedBody(c)})
		return resp, err
	})
}

// HasComment lists the issue's comments looking for the stamp.
func (t *Tracker) HasComment(ctx context.Context, ref qsync.IssueRef, id string) (bool, error) {
	ids, err := t.commentIDs(ctx, issueID(ref))
	if err != nil {
		return false, err
	}
	for _, x := range ids {
		if x == id {
			return true, nil
		}
	}
	return false, nil
}

type commentPage struct {
	StartAt    int          `json:"startAt"`
	MaxResults int          `json:"maxResults"`
	Total      int          `json:"total"`
	Comments   []rawComment `json:"comments"`
}

type rawComment struct {
	ID   string
	Body string
}

// UnmarshalJSON tolerates a non-string body (ADF from a misrouted v3 answer).
func (c *rawComment) UnmarshalJSON(b []byte) error {
	var raw struct {
		ID   json.RawMessage `json:"id"`
		Body json.RawMessage `json:"body"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	decode(raw.Body, &c.Body)
	if !decode(raw.ID, &c.ID) {
		c.ID = string(raw.ID)
	}
	return nil
}

// commentIDs pages through all comments and returns the stamped ids.
func (t *Tracker) commentIDs(ctx context.Context, issue string) ([]string, error) {
	if issue == "" {
		return nil, qsync.Permanentf("jira comments: issue ref has no id or key")
	}
	var ids []string
	start := 0
	for page := 0; page < 10000; page++ {
		path := fmt.Sprintf("rest/api/2/issue/%s/comment?startAt=%d&maxResults=%d", url.PathEscape(issue), start, pageSize)
		var p commentPage
		err := t.call(ctx, "comments", nfGone, func(ctx context.Context) (*jira.Response, error) {
			return t.do(ctx, "GET", path, nil, &p)
		})
		if err != nil {
			return nil, err
		}
		for _, c := range p.Comments {
			if id, ok := commentStamp(c.Body); ok {
				ids = append(ids, id)
			}
		}
		start += len(p.Comments)
		if len(p.Comments) == 0 || start >= p.Total {
			return ids, nil
		}
	}
	return nil, fmt.Errorf("jira comments: paging does not end")
}
