package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"regexp"
	"strings"

	"github.com/qase-sync/qase-sync/config"
	qsync "github.com/qase-sync/qase-sync/sync"
)

type adoptArgs struct {
	routes                           []string
	entity, issue, jql, label, match string
	json                             bool
}

// adopt links existing tracker issues to Qase entities: one (--entity and
// --issue) or every issue a tracker query finds (--jql for Jira, --label
// for GitHub), the entity read from each title.
func (a *app) adopt(ctx context.Context, o adoptArgs, stdout io.Writer) error {
	if len(o.routes) != 1 {
		return fmt.Errorf("%w: links adopt needs exactly one --route", errUsage)
	}
	route := o.routes[0]
	ri, ok := a.mapper.RouteInfo(route)
	if !ok {
		return fmt.Errorf("%w: unknown route %q", errUsage, route)
	}
	single := o.entity != "" || o.issue != ""
	bulk := o.jql != "" || o.label != ""
	var results []qsync.AdoptResult
	switch {
	case single && bulk, !single && !bulk:
		return fmt.Errorf("%w: links adopt takes --entity with --issue, or one of --jql / --label", errUsage)
	case single:
		if o.entity == "" || o.issue == "" {
			return fmt.Errorf("%w: links adopt needs both --entity and --issue", errUsage)
		}
		k, err := qsync.ParseKey(route + ":" + o.entity)
		if err != nil {
			return fmt.Errorf("%w: --entity %q: want PROJECT/KIND/ID", errUsage, o.entity)
		}
		ref, err := issueRef(a.trackerType(ri.Tracker), ri.Project, o.issue)
		if err != nil {
			return fmt.Errorf("%w: %v", errUsage, err)
		}
		r, err := a.engine.Adopt(ctx, k, ref)
		if err != nil {
			return err
		}
		results = append(results, r)
	default:
		typ := a.trackerType(ri.Tracker)
		query := o.jql
		if (typ == config.TrackerJira) != (o.jql != "") || o.jql != "" && o.label != "" {
			return fmt.Errorf("%w: route %s targets %s: use --jql for Jira, --label for GitHub", errUsage, route, typ)
		}
		if typ == config.TrackerGitHub {
			query = o.label
		}
		var re *regexp.Regexp
		if o.match != "" {
			var err error
			if re, err = regexp.Compile(o.match); err != nil {
				return fmt.Errorf("%w: --match: %v", errUsage, err)
			}
			if re.SubexpIndex("id") < 0 {
				return fmt.Errorf("%w: --match needs a named group (?P<id>…)", errUsage)
			}
		}
		var err error
		if results, err = a.engine.AdoptQuery(ctx, route, query, re); err != nil {
			return err
		}
	}
	if o.json {
		return json.NewEncoder(stdout).Encode(results)
	}
	failed := 0
	for _, r := range results {
		switch {
		case r.Skipped:
			fmt.Fprintf(stdout, "skipped %s: %s\n", r.Issue, r.Problem)
		case r.Problem != "":
			failed++
			fmt.Fprintf(stdout, "skipped %s: %s\n", r.Issue, r.Problem)
		case r.Already:
			fmt.Fprintf(stdout, "%s already linked to %s (marker checked)\n", r.Key, r.Issue)
		default:
			fmt.Fprintf(stdout, "adopted %s for %s; a sync is queued\n", r.Issue, r.Key)
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d issues not adopted", failed, len(results))
	}
	return nil
}

// issueRef reads an issue argument: a Jira key (QA-7) or a GitHub
// "owner/repo#N" or "N" (in the route's repository).
func issueRef(typ, project, s string) (qsync.IssueRef, error) {
	if typ != config.TrackerGitHub {
		return qsync.IssueRef{Key: s}, nil
	}
	repo, num, ok := strings.Cut(s, "#")
	if !ok {
		repo, num = project, s
	}
	if repo == "" || num == "" || strings.Trim(num, "0123456789") != "" {
		return qsync.IssueRef{}, fmt.Errorf("--issue %q: want owner/repo#N or N", s)
	}
	return qsync.IssueRef{Project: repo, ID: num, Key: repo + "#" + num}, nil
}
