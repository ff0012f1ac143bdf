package qase

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	qsync "github.com/qase-sync/qase-sync/sync"
)

const payloadDir = "../../testdata/qase"

var testNow = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

type want struct {
	project string
	kind    qsync.Kind
	id      int64
	actor   int64
	attrs   map[string]any
	deleted bool
	comment *qsync.Comment // ID is checked for shape, not value
}

// expectations for every served example payload; legacy files are decoded
// with DefaultProject "LEG" (S21 envelopes carry no project code).
var served = map[string]want{
	"defect.created.json": {"ID", qsync.KindDefect, 1, 40, map[string]any{
		"title": "Example defect", "severity": "normal", "actual_result": "Something",
		"status": "open", "attachments_count": int64(0)}, false, nil},
	"defect.created.legacy.json": {"LEG", qsync.KindDefect, 1, 0, map[string]any{
		"title": "Authorization", "case_id": int64(1), "step": int64(1),
		"actual_result": "Something went wrong", "attachments_count": int64(3), "status": "open"}, false, nil},
	"defect.deleted.json":         {"ID", qsync.KindDefect, 1, 40, nil, true, nil},
	"defect.deleted.legacy.json":  {"LEG", qsync.KindDefect, 1, 0, nil, true, nil},
	"defect.resolved.json":        {"ID", qsync.KindDefect, 1, 40, map[string]any{"status": "resolved"}, false, nil},
	"defect.resolved.legacy.json": {"LEG", qsync.KindDefect, 1, 0, map[string]any{"status": "resolved"}, false, nil},
	"defect.updated.json":         {"ID", qsync.KindDefect, 1, 40, nil, false, nil},

	"review.approval_status_changed.json": {"ID", qsync.KindReview, 2, 48, map[string]any{
		"approval": "approved", "approval_by": "Bob Bar",
		"reviewers/bob@bar.io": map[string]any{"name": "Bob Bar", "status": "approved"}}, false, nil},
	"review.approval_status_changed.legacy.json": {"LEG", qsync.KindReview, 5, 0, map[string]any{
		"approval": "approved", "approval_by": "John Doe",
		"reviewers/jdoe@qase.io": map[string]any{"name": "John Doe", "status": "approved"}}, false, nil},
	"review.commented.json": {"ID", qsync.KindReview, 2, 40, nil, false,
		&qsync.Comment{Author: "Bob Bar", Body: "comment", At: time.Unix(1650534928, 0).UTC()}},
	"review.commented.legacy.json": {"LEG", qsync.KindReview, 5, 0, nil, false,
		&qsync.Comment{Author: "John Doe", Body: "Test comment", At: time.Unix(1570000000, 0).UTC()}},
	"review.created.json": {"ID", qsync.KindReview, 1, 40, map[string]any{
		"title": "Check edit function and result of updates", "case_id": int64(25), "status": "open",
		"author": "Bob Bar", "author_email": "bob@bar.io", "created_at": "2022-04-21T09:47:38Z"}, false, nil},
	"review.created.legacy.json": {"DEMO", qsync.KindReview, 5, 0, map[string]any{
		"title": "Test case revision", "case_id": int64(1), "status": "open", "type": "create",
		"author": "John Doe", "author_email": "jdoe@qase.io", "created_at": "2019-07-21T13:24:08Z"}, false, nil},
	"review.declined.json":        {"ID", qsync.KindReview, 2, 40, map[string]any{"status": "declined", "declined_by": "Bob Bar"}, false, nil},
	"review.declined.legacy.json": {"LEG", qsync.KindReview, 5, 0, map[string]any{"status": "declined", "declined_by": "John Doe"}, false, nil},
	"review.deleted.json":         {"ID", qsync.KindReview, 1, 40, map[string]any{"status": "deleted", "deleted_by": "Bob Bar"}, true, nil},
	"review.deleted.legacy.json":  {"LEG", qsync.KindReview, 5, 0, map[string]any{"status": "deleted", "deleted_by": "John Doe"}, true, nil},
	"review.merged.json":          {"ID", qsync.KindReview, 2, 48, map[string]any{"status": "merged", "merged_by": "Bob Bar"}, false, nil},
	"review.merged.legacy.json":   {"LEG", qsync.KindReview, 5, 0, map[string]any{"status": "merged", "merged_by": "John Doe"}, false, nil},
	"review.reopened.json": {"ID", qsync.KindReview, 2, 40, map[string]any{
		"status": "open", "title": "Check edit function and result of updates", "case_id": int64(25),
		"reopened_by": "Bob Bar"}, false, nil},
	"review.reopened.legacy.json": {"DEMO", qsync.KindReview, 5, 0, map[string]any{ // ids are strings here
		"status": "open", "title": "Test case revision", "case_id": int64(1), "reopened_by": "John Doe"}, false, nil},
	"review.reviewer_added.json": {"ID", qsync.KindReview, 2, 40, map[string]any{
		"reviewers/bob@bar.io": map[string]any{"name": "Bob Bar", "status": "unapproved"}}, false, nil},
	"review.reviewer_added.legacy.json": {"LEG", qsync.KindReview, 5, 0, map[string]any{
		"reviewers/jdoe@qase.io": map[string]any{"name": "John Doe", "status": "unapproved"}}, false, nil},
	"review.reviewer_removed.json":        {"ID", qsync.KindReview, 2, 40, map[string]any{"reviewers/bib@bob.io": nil}, false, nil},
	"review.reviewer_removed.legacy.json": {"LEG", qsync.KindReview, 5, 0, map[string]any{"reviewers/jdoe@qase.io": nil}, false, nil},
	"review.updated.json": {"ID", qsync.KindReview, 1, 40, map[string]any{
		"title": "Check edit function and result of updates", "case_id": int64(25), "updated_by": "Bib Bob"}, false, nil},

	"run.aborted.json": {"ID", qsync.KindRun, 1, 40, map[string]any{
		"status": "aborted", "cases": int64(14), "passed": int64(0), "untested": int64(14), "failed": int64(0),
		"blocked": int64(0), "skipped": int64(0), "duration": int64(0)}, false, nil},
	"run.aborted.legacy.json": {"LEG", qsync.KindRun, 1, 0, map[string]any{
		"status": "aborted", "cases": int64(40), "passed": int64(10), "untested": int64(10), "failed": int64(10),
		"blocked": int64(10), "duration": int64(600)}, false, nil},
	"run.completed.json": {"ID", qsync.KindRun, 2, 40, map[string]any{
		"cases": int64(14), "passed": int64(0), "failed": int64(0), "blocked": int64(0), "duration": int64(0),
		"status": "passed", "completed": true}, false, nil},
	"run.completed.legacy.json": {"LEG", qsync.KindRun, 1, 0, map[string]any{
		"cases": int64(40), "passed": int64(10), "failed": int64(10), "blocked": int64(10), "duration": int64(600),
		"status": "failed", "completed": true}, false, nil},
	"run.deleted.json":               {"ID", qsync.KindRun, 1, 40, nil, true, nil},
	"run.deleted.legacy.json":        {"LEG", qsync.KindRun, 1, 0, nil, true, nil},
	"run.report_changed.json":        {"ID", qsync.KindRun, 2, 40, map[string]any{"public": true}, false, nil},
	"run.report_changed.legacy.json": {"LEG", qsync.KindRun, 1, 0, map[string]any{"public": true}, false, nil},
	"run.started.json": {"ID", qsync.KindRun, 1, 40, map[string]any{
		"title": "Test run 2022/04/21", "plan": "d", "plan_id": int64(3), "cases": int64(14), "status": "in_progress"}, false, nil},
	"run.started.legacy.json": {"LEG", qsync.KindRun, 1, 0, map[string]any{
		"title": "Test run", "description": "Regression", "plan": int64(1), "plan_id": int64(1),
		"cases": int64(100), "status": "in_progress"}, false, nil},
	"run.updated.json":        {"ID", qsync.KindRun, 1, 40, map[string]any{"cases_added": int64(14)}, false, nil},
	"run.updated.legacy.json": {"LEG", qsync.KindRun, 1, 0, map[string]any{"cases_added": int64(100)}, false, nil},
}

func payloadFiles(t testing.TB) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(payloadDir, "*.json"))
	if err != nil || len(files) < 70 {
		t.Fatalf("example payloads not found in %s (%d files, %v)", payloadDir, len(files), err)
	}
	return files
}

func readFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDecodeEveryExamplePayload(t *testing.T) {
	seen := map[string]bool{}
	for _, path := range payloadFiles(t) {
		base := filepath.Base(path)
		t.Run(base, func(t *testing.T) {
			body := readFile(t, path)
			var env struct {
				Timestamp int64 `json:"timestamp"`
			}
			if err := json.Unmarshal(body, &env); err != nil {
				t.Fatal(err)
			}
			ev, err := Decode(body, DecodeOptions{DefaultProject: "leg"}, testNow)
			name := strings.TrimSuffix(strings.TrimSuffix(base, ".json"), ".legacy")
			prefix, _, _ := strings.Cut(name, ".")
			if ev.Name != name {
				t.Errorf("Name = %q, want %q", ev.Name, name)
			}
			if ev.DedupKey == "" || len(ev.DedupKey) != 64 {
				t.Errorf("DedupKey = %q, want 64 hex chars", ev.DedupKey)
			}
			if !ev.Timestamp.Equal(time.Unix(env.Timestamp, 0)) {
				t.Errorf("Timestamp = %v, want unix %d", ev.Timestamp, env.Timestamp)
			}
			if !bytes.Equal(ev.Payload, body) || !ev.ReceivedAt.Equal(testNow) {
				t.Errorf("Payload/ReceivedAt not kept")
			}
			w, ok := served[base]
			if !qsync.Kind(prefix).Valid() {
				if !errors.Is(err, ErrUnservedKind) {
					t.Fatalf("err = %v, want ErrUnservedKind", err)
				}
				if ev.Ref.Kind != qsync.Kind(prefix) || ev.Ref.Project == "" {
					t.Errorf("Ref = %+v, want kind %q and a project", ev.Ref, prefix)
				}
				return
			}
			if !ok {
				t.Fatalf("served payload %s has no expectation in the table", base)
			}
			seen[base] = true
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if got := (qsync.EntityRef{Project: w.project, Kind: w.kind, ID: w.id}); ev.Ref != got {
				t.Errorf("Ref = %+v, want %+v", ev.Ref, got)
			}
			if ev.ActorID != w.actor {
				t.Errorf("ActorID = %d, want %d", ev.ActorID, w.actor)
			}
			if !reflect.DeepEqual(ev.Patch.Attrs, w.attrs) {
				t.Errorf("Attrs =\n  %#v\nwant\n  %#v", ev.Patch.Attrs, w.attrs)
			}
			if ev.Patch.Deleted != w.deleted {
				t.Errorf("Deleted = %v, want %v", ev.Patch.Deleted, w.deleted)
			}
			switch c := ev.Patch.Comment; {
			case w.comment == nil && c != nil:
				t.Errorf("unexpected comment %+v", c)
			case w.comment != nil && c == nil:
				t.Errorf("missing comment")
			case c != nil:
				if c.ID != "qase-"+ev.DedupKey[:16] {
					t.Errorf("Comment.ID = %q, want qase-<16 hex of dedup key>", c.ID)
				}
				if c.Author != w.comment.Author || c.Body != w.comment.Body || !c.At.Equal(w.comment.At) {
					t.Errorf("Comment = %+v, want %+v", *c, *w.comment)
				}
			}
		})
	}
	for f := range served {
		if !seen[f] {
			t.Errorf("expectation for %s but no such served example payload", f)
		}
	}
}

func mustDecode(t *testing.T, body string, opts DecodeOptions) qsync.Event {
	t.Helper()
	ev, err := Decode([]byte(body), opts, testNow)
	if err != nil {
		t.Fatalf("Decode(%s): %v", body, err)
	}
	return ev
}

func TestDecodeVariants(t *testing.T) {
	tests := []struct {
		name  string
		body  string
		opts  DecodeOptions
		check func(t *testing.T, ev qsync.Event)
	}{
		{"string id", `{"event_name":"defect.resolved","timestamp":1,"project_code":"P","payload":{"id":"25"}}`, DecodeOptions{},
			func(t *testing.T, ev qsync.Event) { eqRef(t, ev, "P", qsync.KindDefect, 25) }},
		{"padded string id", `{"event_name":"defect.resolved","timestamp":1,"project_code":"P","payload":{"id":" 7 "}}`, DecodeOptions{},
			func(t *testing.T, ev qsync.Event) { eqRef(t, ev, "P", qsync.KindDefect, 7) }},
		{"float id", `{"event_name":"run.deleted","timestamp":1,"project_code":"P","payload":{"id":25.0}}`, DecodeOptions{},
			func(t *testing.T, ev qsync.Event) { eqRef(t, ev, "P", qsync.KindRun, 25) }},
		{"exponent id", `{"event_name":"run.deleted","timestamp":1,"project_code":"P","payload":{"id":2.5e1}}`, DecodeOptions{},
			func(t *testing.T, ev qsync.Event) { eqRef(t, ev, "P", qsync.KindRun, 25) }},
		{"event instead of event_name", `{"event":"defect.deleted","timestamp":1,"payload":{"id":3}}`, DecodeOptions{DefaultProject: "DEF"},
			func(t *testing.T, ev qsync.Event) {
				eqRef(t, ev, "DEF", qsync.KindDefect, 3)
				if !ev.Patch.Deleted {
					t.Error("not deleted")
				}
			}},
		{"event_name wins over event", `{"event_name":"defect.resolved","event":"defect.deleted","timestamp":1,"project_code":"P","payload":{"id":3}}`, DecodeOptions{},
			func(t *testing.T, ev qsync.Event) {
				if ev.Name != "defect.resolved" || ev.Patch.Deleted {
					t.Errorf("got %s deleted=%v", ev.Name, ev.Patch.Deleted)
				}
			}},
		{"project_code wins over default and is upper-cased", `{"event_name":"defect.updated","timestamp":1,"project_code":"demo","payload":{"id":3}}`, DecodeOptions{DefaultProject: "OTHER"},
			func(t *testing.T, ev qsync.Event) { eqRef(t, ev, "DEMO", qsync.KindDefect, 3) }},
		{"project from URL/default", `{"event_name":"defect.updated","timestamp":1,"payload":{"id":3}}`, DecodeOptions{DefaultProject: "url"},
			func(t *testing.T, ev qsync.Event) { eqRef(t, ev, "URL", qsync.KindDefect, 3) }},
		{"empty array payload on an id-less unserved event", `{"event_name":"result.created","timestamp":1,"project_code":"P","payload":[]}`, DecodeOptions{},
			nil /* checked below: unserved */},
		{"missing timestamp uses now", `{"event_name":"defect.updated","project_code":"P","payload":{"id":3}}`, DecodeOptions{},
			func(t *testing.T, ev qsync.Event) {
				if !ev.Timestamp.Equal(testNow) {
					t.Errorf("Timestamp = %v, want now", ev.Timestamp)
				}
			}},
		{"null timestamp uses now", `{"event_name":"defect.updated","timestamp":null,"project_code":"P","payload":{"id":3}}`, DecodeOptions{},
			func(t *testing.T, ev qsync.Event) { eqTime(t, ev.Timestamp, testNow) }},
		{"string timestamp", `{"event_name":"defect.updated","timestamp":"1650532563","project_code":"P","payload":{"id":3}}`, DecodeOptions{},
			func(t *testing.T, ev qsync.Event) { eqTime(t, ev.Timestamp, time.Unix(1650532563, 0)) }},
		{"float timestamp", `{"event_name":"defect.updated","timestamp":1650532563.5,"project_code":"P","payload":{"id":3}}`, DecodeOptions{},
			func(t *testing.T, ev qsync.Event) { eqTime(t, ev.Timestamp, time.Unix(1650532563, 5e8)) }},
		{"millisecond timestamp", `{"event_name":"defect.updated","timestamp":1650532563000,"project_code":"P","payload":{"id":3}}`, DecodeOptions{},
			func(t *testing.T, ev qsync.Event) { eqTime(t, ev.Timestamp, time.Unix(1650532563, 0)) }},
		{"ISO timestamp", `{"event_name":"defect.updated","timestamp":"2022-04-21T09:47:38Z","project_code":"P","payload":{"id":3}}`, DecodeOptions{},
			func(t *testing.T, ev qsync.Event) {
				eqTime(t, ev.Timestamp, time.Date(2022, 4, 21, 9, 47, 38, 0, time.UTC))
			}},
		{"garbage timestamp uses now", `{"event_name":"defect.updated","timestamp":{"x":1},"project_code":"P","payload":{"id":3}}`, DecodeOptions{},
			func(t *testing.T, ev qsync.Event) { eqTime(t, ev.Timestamp, testNow) }},
		{"string team_member_id", `{"event_name":"defect.updated","timestamp":1,"project_code":"P","team_member_id":"40","payload":{"id":3}}`, DecodeOptions{},
			func(t *testing.T, ev qsync.Event) {
				if ev.ActorID != 40 {
					t.Errorf("ActorID = %d", ev.ActorID)
				}
			}},
		{"odd team_member_id is ignored", `{"event_name":"defect.updated","timestamp":1,"project_code":"P","team_member_id":{"id":4},"payload":{"id":3}}`, DecodeOptions{},
			func(t *testing.T, ev qsync.Event) {
				if ev.ActorID != 0 {
					t.Errorf("ActorID = %d", ev.ActorID)
				}
			}},
		{"severity object by title", `{"event_name":"defect.created","timestamp":1,"project_code":"P","payload":{"id":3,"title":"t","severity":{"id":2,"title":"Major"}}}`, DecodeOptions{},
			func(t *testing.T, ev qsync.Event) { eqAttr(t, ev, "severity", "major") }},
		{"severity object by slug", `{"event_name":"defect.created","timestamp":1,"project_code":"P","payload":{"id":3,"severity":{"slug":"critical","title":"Kritisch"}}}`, DecodeOptions{},
			func(t *testing.T, ev qsync.Event) { eqAttr(t, ev, "severity", "critical") }},
		{"severity upper-case string", `{"event_name":"defect.created","timestamp":1,"project_code":"P","payload":{"id":3,"severity":"Blocker"}}`, DecodeOptions{},
			func(t *testing.T, ev qsync.Event) { eqAttr(t, ev, "severity", "blocker") }},
		{"type surprises skip only that attr", `{"event_name":"defect.created","timestamp":1,"project_code":"P","payload":{"id":3,"title":5,"severity":7,"actual_result":"x","attachments":"none","case_id":"abc"}}`, DecodeOptions{},
			func(t *testing.T, ev qsync.Event) {
				want := map[string]any{"actual_result": "x", "status": "open"}
				if !reflect.DeepEqual(ev.Patch.Attrs, want) {
					t.Errorf("Attrs = %#v, want %#v", ev.Patch.Attrs, want)
				}
			}},
		{"unknown fields ignored", `{"event_name":"run.completed","timestamp":1,"project_code":"P","new_field":{"a":[1]},"payload":{"id":3,"failed":2,"flaky":9,"extra":{"x":1}}}`, DecodeOptions{},
			func(t *testing.T, ev qsync.Event) {
				eqAttr(t, ev, "status", "failed")
				if _, ok := ev.Patch.Attrs["flaky"]; ok {
					t.Error("unknown field leaked into attrs")
				}
			}},
		{"request changes normalized", `{"event_name":"review.approval_status_changed","timestamp":1,"project_code":"P","payload":{"id":"9","status":"request changes","updated_by":{"email":"Ann@X.io","name":"Ann"}}}`, DecodeOptions{},
			func(t *testing.T, ev qsync.Event) {
				eqRef(t, ev, "P", qsync.KindReview, 9)
				eqAttr(t, ev, "approval", "changes_requested")
				eqAttr(t, ev, "reviewers/ann@x.io", map[string]any{"name": "Ann", "status": "changes_requested"})
			}},
		{"run.started plan without title, environment object", `{"event_name":"run.started","timestamp":1,"project_code":"P","payload":{"id":3,"plan":{"id":"8"},"environment":{"slug":"staging","title":"Staging"},"cases_count":"12"}}`, DecodeOptions{},
			func(t *testing.T, ev qsync.Event) {
				eqAttr(t, ev, "plan", int64(8))
				eqAttr(t, ev, "environment", "staging")
				eqAttr(t, ev, "cases", int64(12))
			}},
		{"run.started null plan", `{"event_name":"run.started","timestamp":1,"project_code":"P","payload":{"id":3,"plan":null,"environment":"prod"}}`, DecodeOptions{},
			func(t *testing.T, ev qsync.Event) {
				if _, ok := ev.Patch.Attrs["plan"]; ok {
					t.Error("plan set from null")
				}
				eqAttr(t, ev, "environment", "prod")
			}},
		{"run.updated with array and with cases_count", `{"event_name":"run.updated","timestamp":1,"project_code":"P","payload":{"id":3,"cases_added":[4,5,6]}}`, DecodeOptions{},
			func(t *testing.T, ev qsync.Event) { eqAttr(t, ev, "cases_added", int64(3)) }},
		{"run.updated cases_count name", `{"event_name":"run.updated","timestamp":1,"project_code":"P","payload":{"id":3,"cases_count":4}}`, DecodeOptions{},
			func(t *testing.T, ev qsync.Event) { eqAttr(t, ev, "cases_added", int64(4)) }},
		{"report_changed string bool", `{"event_name":"run.report_changed","timestamp":1,"project_code":"P","payload":{"id":3,"visible":"false"}}`, DecodeOptions{},
			func(t *testing.T, ev qsync.Event) { eqAttr(t, ev, "public", false) }},
		{"commented without text is a hint", `{"event_name":"review.commented","timestamp":1,"project_code":"P","payload":{"id":3,"commented_by":{"name":"A"}}}`, DecodeOptions{},
			func(t *testing.T, ev qsync.Event) {
				if ev.Patch.Comment != nil {
					t.Error("comment from nothing")
				}
			}},
		{"unknown action of a served kind is a hint", `{"event_name":"defect.status_changed","timestamp":1,"project_code":"P","payload":{"id":3,"status":"invalid"}}`, DecodeOptions{},
			func(t *testing.T, ev qsync.Event) {
				if ev.Patch.Attrs != nil || ev.Patch.Deleted {
					t.Errorf("patch = %+v", ev.Patch)
				}
			}},
		{"case-insensitive name", `{"event_name":" Defect.Resolved ","timestamp":1,"project_code":"P","payload":{"id":3}}`, DecodeOptions{},
			func(t *testing.T, ev qsync.Event) { eqAttr(t, ev, "status", "resolved") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.check == nil {
				ev, err := Decode([]byte(tt.body), tt.opts, testNow)
				if !errors.Is(err, ErrUnservedKind) || ev.Ref.Kind != "result" || ev.Ref.Project != "P" {
					t.Fatalf("got %+v, %v; want unserved result event", ev.Ref, err)
				}
				return
			}
			tt.check(t, mustDecode(t, tt.body, tt.opts))
		})
	}
}

func TestDecodeNotes(t *testing.T) {
	_, notes, err := decode([]byte(`{"event_name":"defect.created","project_code":"P","payload":{"id":3,"title":5}}`), DecodeOptions{}, testNow)
	if err != nil {
		t.Fatal(err)
	}
	joined := strings.Join(notes, "; ")
	for _, w := range []string{"timestamp missing", "title: unexpected a number"} {
		if !strings.Contains(joined, w) {
			t.Errorf("notes %q lack %q", joined, w)
		}
	}
}

func TestDecodeErrors(t *testing.T) {
	tests := []struct {
		name    string
		body    string
		opts    DecodeOptions
		kind    error
		contain string
	}{
		{"empty body", ``, DecodeOptions{}, ErrMalformedJSON, "empty body"},
		{"syntax error names the offset", `{"event_name" "defect.created"}`, DecodeOptions{}, ErrMalformedJSON, "at byte 15"},
		{"truncated", `{"event_name":"defect.created","payload":{"id":1}`, DecodeOptions{}, ErrMalformedJSON, "unexpected end of input"},
		{"trailing data", `{"event_name":"defect.created"} {"x":1}`, DecodeOptions{}, ErrMalformedJSON, "after the top-level value"},
		{"array body", `[{"event_name":"defect.created"}]`, DecodeOptions{}, ErrNotObject, "got an array"},
		{"string body", `"defect.created"`, DecodeOptions{}, ErrNotObject, "got a string"},
		{"missing event name", `{"timestamp":1,"project_code":"P","payload":{"id":1}}`, DecodeOptions{}, ErrMissingEventName, "event_name"},
		{"empty event name", `{"event_name":"  ","project_code":"P","payload":{"id":1}}`, DecodeOptions{}, ErrMissingEventName, "event_name"},
		{"event name not a string", `{"event_name":42,"project_code":"P","payload":{"id":1}}`, DecodeOptions{}, ErrMissingEventName, "event_name must be a string, got a number"},
		{"missing project", `{"event_name":"defect.created","timestamp":1,"payload":{"id":1}}`, DecodeOptions{}, ErrMissingProject, "project_code"},
		{"project not a string", `{"event_name":"defect.created","project_code":7,"payload":{"id":1}}`, DecodeOptions{}, ErrMissingProject, "project_code must be a string"},
		{"project with a slash", `{"event_name":"defect.created","project_code":"A/B","payload":{"id":1}}`, DecodeOptions{}, ErrBadProject, `"A/B"`},
		{"missing id", `{"event_name":"defect.created","project_code":"P","payload":{"title":"x"}}`, DecodeOptions{}, ErrBadID, "payload.id is missing"},
		{"empty array payload", `{"event_name":"defect.updated","project_code":"P","payload":[]}`, DecodeOptions{}, ErrBadID, "payload.id is missing"},
		{"missing payload", `{"event_name":"defect.updated","project_code":"P"}`, DecodeOptions{}, ErrBadID, "payload.id is missing"},
		{"non-numeric id", `{"event_name":"run.started","project_code":"P","payload":{"id":"abc"}}`, DecodeOptions{}, ErrBadID, `payload.id "abc" is not an integer`},
		{"fractional id", `{"event_name":"run.started","project_code":"P","payload":{"id":2.5}}`, DecodeOptions{}, ErrBadID, "2.5 is not an integer"},
		{"object id", `{"event_name":"run.started","project_code":"P","payload":{"id":{"v":1}}}`, DecodeOptions{}, ErrBadID, "(an object)"},
		{"zero id", `{"event_name":"run.started","project_code":"P","payload":{"id":0}}`, DecodeOptions{}, ErrBadID, "not a positive integer"},
		{"payload string", `{"event_name":"run.started","project_code":"P","payload":"x"}`, DecodeOptions{}, ErrBadPayload, "payload must be an object, got a string"},
		{"unserved kind beats a missing project", `{"event_name":"case.created","payload":{"id":1}}`, DecodeOptions{}, ErrUnservedKind, `"case"`},
		{"unserved kind with an odd payload", `{"event_name":"suite.deleted","project_code":"P","payload":"x"}`, DecodeOptions{}, ErrUnservedKind, "suite.deleted"},
		{"name without a dot", `{"event_name":"ping","project_code":"P"}`, DecodeOptions{}, ErrUnservedKind, `"ping"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Decode([]byte(tt.body), tt.opts, testNow)
			if !errors.Is(err, tt.kind) {
				t.Fatalf("err = %v, want %v", err, tt.kind)
			}
			var de *DecodeError
			if !errors.As(err, &de) {
				t.Fatalf("err %T is not a *DecodeError", err)
			}
			if !strings.Contains(err.Error(), tt.contain) {
				t.Errorf("err = %q, want it to mention %q", err, tt.contain)
			}
		})
	}
	// the syntax offset is exposed, not only printed
	_, err := Decode([]byte(`{"a" 1}`), DecodeOptions{}, testNow)
	var de *DecodeError
	if !errors.As(err, &de) || de.Offset != 6 {
		t.Errorf("Offset = %+v, want 6", de)
	}
}

func TestDecodeKeepsWhatItCouldRead(t *testing.T) {
	// The handler authenticates per project even when the body is incomplete.
	ev, err := Decode([]byte(`{"project_code":"abc","timestamp":5,"payload":{"id":1}}`), DecodeOptions{}, testNow)
	if !errors.Is(err, ErrMissingEventName) || ev.Ref.Project != "ABC" {
		t.Errorf("got project %q, err %v", ev.Ref.Project, err)
	}
}

func TestDedupKey(t *testing.T) {
	body := readFile(t, filepath.Join(payloadDir, "review.commented.json"))
	base := mustDecode(t, string(body), DecodeOptions{})

	// Same content, different formatting and key order.
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatal(err)
	}
	reordered, _ := json.MarshalIndent(m, "", "\t") // sorted keys, tabs
	compact := `{"project_code":"ID","payload":{"commented_by":{"name":"Bob Bar","email":"bob@bar.io"},"comment":"comment","id":2},"team_member_id":40,"timestamp":1650534928,"event_name":"review.commented"}`
	for i, variant := range []string{string(reordered), compact, "\n  " + string(body) + "\n"} {
		ev := mustDecode(t, variant, DecodeOptions{})
		if ev.DedupKey != base.DedupKey {
			t.Errorf("variant %d: key %s, want %s", i, ev.DedupKey, base.DedupKey)
		}
		if ev.Patch.Comment.ID != base.Patch.Comment.ID {
			t.Errorf("variant %d: comment id changed", i)
		}
	}
	// A redelivery at another time still dedupes: the key uses Qase's time.
	if ev, _ := Decode(body, DecodeOptions{}, testNow.Add(time.Hour)); ev.DedupKey != base.DedupKey {
		t.Error("key depends on the receive time")
	}

	differ := map[string]string{
		"other comment, same second": strings.Replace(compact, `"comment":"comment"`, `"comment":"another"`, 1),
		"other second":               strings.Replace(compact, "1650534928", "1650534929", 1),
		"other project":              strings.Replace(compact, `"ID"`, `"OTHER"`, 1),
		"other entity":               strings.Replace(compact, `"id":2`, `"id":3`, 1),
		"other commenter":            strings.Replace(compact, `bob@bar.io`, `ann@bar.io`, 1),
	}
	keys := map[string]string{base.DedupKey: "base"}
	for name, variant := range differ {
		ev := mustDecode(t, variant, DecodeOptions{})
		if prev, dup := keys[ev.DedupKey]; dup {
			t.Errorf("%s: same key as %s", name, prev)
		}
		keys[ev.DedupKey] = name
		if ev.Patch.Comment.ID == base.Patch.Comment.ID {
			t.Errorf("%s: same comment id", name)
		}
	}

	// [] and {} are the same empty payload.
	a, _ := Decode([]byte(`{"event_name":"suite.updated","timestamp":1,"project_code":"P","payload":[]}`), DecodeOptions{}, testNow)
	b, _ := Decode([]byte(`{"event_name":"suite.updated","timestamp":1,"project_code":"P","payload":{}}`), DecodeOptions{}, testNow)
	if a.DedupKey == "" || a.DedupKey != b.DedupKey {
		t.Errorf("[] and {} payloads: %q vs %q", a.DedupKey, b.DedupKey)
	}
}

func FuzzDecode(f *testing.F) {
	for _, path := range payloadFiles(f) {
		f.Add(readFile(f, path), "")
		f.Add(readFile(f, path), "FZ")
	}
	f.Add([]byte(`{"event_name":"defect.created","payload":[]}`), "P")
	f.Add([]byte(`{"event":"run.started","timestamp":"1e3","payload":{"id":"1","plan":{"id":1.0}}}`), "P")
	f.Fuzz(func(t *testing.T, body []byte, project string) {
		ev, err := Decode(body, DecodeOptions{DefaultProject: project}, testNow)
		if err != nil {
			var de *DecodeError
			if !errors.As(err, &de) || de.Detail == "" {
				t.Fatalf("error %v (%T) is not a detailed *DecodeError", err, err)
			}
			return
		}
		if ev.Name == "" || ev.Ref.Project == "" || len(ev.DedupKey) != 64 {
			t.Fatalf("decoded event lacks name/project/dedup key: %+v", ev)
		}
		if !ev.Ref.Kind.Valid() || ev.Ref.ID <= 0 {
			t.Fatalf("decoded event has an unusable ref %+v", ev.Ref)
		}
		if _, err := qsync.ParseKey(qsync.Key{Route: "r", EntityRef: ev.Ref}.String()); err != nil {
			t.Fatalf("ref %+v does not round-trip as a key: %v", ev.Ref, err)
		}
		if _, err := json.Marshal(ev.Patch); err != nil {
			t.Fatalf("patch not JSON-encodable: %v", err)
		}
		again, err := Decode(body, DecodeOptions{DefaultProject: project}, testNow.Add(time.Minute))
		if err != nil || (again.DedupKey != ev.DedupKey && ev.Timestamp != testNow) {
			t.Fatalf("decode is not deterministic: %v", err)
		}
	})
}

func eqRef(t *testing.T, ev qsync.Event, project string, kind qsync.Kind, id int64) {
	t.Helper()
	if want := (qsync.EntityRef{Project: project, Kind: kind, ID: id}); ev.Ref != want {
		t.Errorf("Ref = %+v, want %+v", ev.Ref, want)
	}
}

func eqAttr(t *testing.T, ev qsync.Event, key string, want any) {
	t.Helper()
	if got, ok := ev.Patch.Attrs[key]; !ok || !reflect.DeepEqual(got, want) {
		t.Errorf("attr %s = %#v (present %v), want %#v", key, got, ok, want)
	}
}

func eqTime(t *testing.T, got, want time.Time) {
	t.Helper()
	if !got.Equal(want) {
		t.Errorf("time = %v, want %v", got, want)
	}
}

// An overflowing counter is not silently dropped under a misleading
// "unexpected a number": the note says what is wrong with the value.
func TestDecodeOverflowingNumberNote(t *testing.T) {
	ev, notes, err := decode([]byte(`{"event_name":"run.completed","project_code":"P","team_member_id":1e400,"payload":{"id":2,"cases":14,"passed":99999999999999999999,"failed":1.5,"blocked":"x"}}`), DecodeOptions{}, testNow)
	if err != nil {
		t.Fatal(err)
	}
	joined := strings.Join(notes, "; ")
	for _, w := range []string{
		"passed: 99999999999999999999 is out of range for a 64-bit integer, skipped",
		"failed: 1.5 is not an integer (a fraction), skipped",
		`blocked: "x" is not an integer, skipped`,
		"team_member_id: 1e400 is out of range",
	} {
		if !strings.Contains(joined, w) {
			t.Errorf("notes %q lack %q", joined, w)
		}
	}
	if _, ok := ev.Patch.Attrs["passed"]; ok {
		t.Error("an out-of-range counter was stored")
	}
	if ev.Patch.Attrs["cases"] != int64(14) {
		t.Errorf("cases = %v", ev.Patch.Attrs["cases"])
	}
	_, err = Decode([]byte(`{"event_name":"run.completed","project_code":"P","payload":{"id":18446744073709551616}}`), DecodeOptions{}, testNow)
	if err == nil || !strings.Contains(err.Error(), "payload.id 18446744073709551616 is out of range for a 64-bit integer") {
		t.Errorf("overflowing id: %v", err)
	}
}
