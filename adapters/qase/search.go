package qase

import (
	"context"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	qsync "github.com/qase-sync/qase-sync/sync"
)

var _ qsync.ChangeSource = (*Client)(nil)

// QQL (GET /search) as the incremental reconciler uses it. The query
// language is documented outside the API spec (help.qase.io, "Queries
// (QQL)"): `entity = "defect" and project = "CODE" and ... order by F
// asc`, comparisons with <, <=, >, >= on integers, times as Unix
// timestamps (its now() returns one). The name of the update-time
// attribute is not in the spec; qqlUpdated is the one this client sends,
// and a Qase that refuses the query (400) makes the reconciler list
// instead (the pass still completes, only dearer).
const (
	qqlUpdated = "updatedAt"
	// qqlMaxQuery is the spec's maxLength of the query parameter.
	qqlMaxQuery = 1000
)

// qqlEntity names the kinds QQL can search by update time: its defect
// record carries updated_at. Its run record has no update time (a run
// changes as results arrive) and reviews are no QQL entity, so those are
// left to full sweeps.
var qqlEntity = map[qsync.Kind]string{qsync.KindDefect: "defect"}

// qqlIDField is the record field holding the entity's id in its project
// (the QQL records also carry a global "id").
var qqlIDField = map[qsync.Kind]string{qsync.KindDefect: "defect_id"}

// Searchable implements qsync.ChangeSource.
func (c *Client) Searchable(kind qsync.Kind) bool {
	_, ok := qqlEntity[kind]
	return ok
}

// SearchQuery is the QQL query Changed sends for one page run.
func SearchQuery(project string, kind qsync.Kind, since time.Time) (string, error) {
	entity, ok := qqlEntity[kind]
	if !ok {
		return "", qsync.Permanentf("qase: %ss cannot be searched by update time", kind)
	}
	if project == "" || strings.ContainsAny(project, "\"\\") {
		return "", qsync.Permanentf("qase: project code %q cannot be quoted in QQL", project)
	}
	q := fmt.Sprintf(`entity = "%s" and project = "%s" and %s >= %d order by %s asc`,
		entity, project, qqlUpdated, since.Unix(), qqlUpdated)
	if len(q) > qqlMaxQuery {
		return "", qsync.Permanentf("qase: QQL query longer than %d characters", qqlMaxQuery)
	}
	return q, nil
}

// Changed implements qsync.ChangeSource: it pages through GET /search
// (limit 100, offset) ordered by update time. At the offset cap it starts
// again from the newest update time seen, so a burst of changes larger
// than one scan can reach is still read whole (entities of that second
// come twice, which is harmless).
func (c *Client) Changed(ctx context.Context, project string, kind qsync.Kind, since time.Time, fn func(qsync.EntityRef, map[string]any) error) error {
	from := since.Truncate(time.Second)
	for {
		query, err := SearchQuery(project, kind, from)
		if err != nil {
			return err
		}
		newest, more, err := c.searchFrom(ctx, query, project, kind, fn)
		if err != nil {
			return err
		}
		if !more {
			return nil
		}
		if !newest.After(from) {
			return fmt.Errorf("%w (%s %s updated at %s)", ErrListTruncated, project, kind, from.UTC().Format(time.RFC3339))
		}
		c.log.WithFields(logrus.Fields{"project": project, "kind": kind, "from": newest.UTC().Format(time.RFC3339)}).
			Info("qase search: offset cap reached; searching again from the newest update seen")
		from = newest
	}
}

// searchFrom reads every page of one query; more=true when the offset
// cap stopped it, newest is the latest update time it saw.
func (c *Client) searchFrom(ctx context.Context, query, project string, kind qsync.Kind, fn func(qsync.EntityRef, map[string]any) error) (newest time.Time, more bool, err error) {
	for offset := 0; ; {
		q := url.Values{"query": {query}, "limit": {strconv.Itoa(pageLimit)}, "offset": {strconv.Itoa(offset)}}
		var page struct {
			Total    int64            `json:"total"`
			Entities []map[string]any `json:"entities"`
		}
		if err := c.get(ctx, "search", "/search", q, &page); err != nil {
			return newest, false, err
		}
		for _, rec := range page.Entities {
			id, ok := toInt64(rec[qqlIDField[kind]])
			if !ok {
				id, ok = toInt64(rec["id"])
			}
			if !ok || id <= 0 {
				c.log.WithFields(logrus.Fields{"project": project, "kind": kind}).Warn("qase search: entity without a usable id skipped")
				continue
			}
			if s, ok := rec["updated_at"].(string); ok {
				if t, err := time.Parse(time.RFC3339, normalizeTime(s)); err == nil && t.After(newest) {
					newest = t
				}
			}
			if err := fn(qsync.EntityRef{Project: project, Kind: kind, ID: id}, entityAttrs(kind, rec)); err != nil {
				return newest, false, err
			}
		}
		offset += len(page.Entities)
		switch {
		case len(page.Entities) < pageLimit, page.Total > 0 && int64(offset) >= page.Total:
			return newest, false, nil
		case offset > maxOffset:
			return newest, true, nil
		}
	}
}
