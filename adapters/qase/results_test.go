package qase_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/qase-sync/qase-sync/adapters/qase"
	"github.com/qase-sync/qase-sync/adapters/qase/qasefake"
	qsync "github.com/qase-sync/qase-sync/sync"
)

// seedRun puts a run with n passed and failed results in the fake.
func seedRun(fake *qasefake.Server, run int64, failed, passed int) {
	fake.PutRun("SHOP", map[string]any{"id": run, "status_text": "failed"})
	for i := range failed + passed {
		st := "passed"
		if i < failed {
			st = "failed"
		}
		fake.PutResult("SHOP", map[string]any{"hash": fmt.Sprintf("h%d-%03d", run, i), "run_id": run, "case_id": i + 1, "status": st,
			"comment": "boom", "stacktrace": "at x(X.java:1)", "end_time": "2026-03-01 10:00:00",
			"attachments": []any{map[string]any{"url": "https://qase.example/a.png", "filename": "a.png"}}})
	}
}

func TestRunResultsPagesAndReadsFields(t *testing.T) {
	fake, c, _ := setup(t)
	fake.AddProject("SHOP")
	seedRun(fake, 7, 150, 30)
	seedRun(fake, 8, 3, 0) // another run: never mixed in
	var got []qsync.FailureResult
	err := c.RunResults(context.Background(), "SHOP", 7, "failed", func(r qsync.FailureResult) error {
		got = append(got, r)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 150 {
		t.Fatalf("%d failed results, want 150 (two pages)", len(got))
	}
	r := got[0]
	want := qsync.FailureResult{Hash: "h7-000", RunID: 7, CaseID: 1, Status: "failed", Message: "boom", Stacktrace: "at x(X.java:1)",
		EndTime: time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC), Attachments: []string{"https://qase.example/a.png"}}
	if fmt.Sprint(r) != fmt.Sprint(want) {
		t.Fatalf("result %+v, want %+v", r, want)
	}
	total, err := c.RunResultTotal(context.Background(), "SHOP", 7)
	if err != nil || total != 180 {
		t.Fatalf("total %d, %v; want 180", total, err)
	}
}

func TestCaseTitleAndRecentRuns(t *testing.T) {
	fake, c, _ := setup(t)
	fake.AddProject("SHOP")
	fake.PutCase("SHOP", map[string]any{"id": 4, "title": "Checkout works"})
	if title, found, err := c.CaseTitle(context.Background(), "SHOP", 4); err != nil || !found || title != "Checkout works" {
		t.Fatalf("case title %q found %v err %v", title, found, err)
	}
	if _, found, err := c.CaseTitle(context.Background(), "SHOP", 5); err != nil || found {
		t.Fatalf("missing case: found %v err %v", found, err)
	}
	for id := int64(1); id <= 30; id++ {
		st := "passed"
		if id == 30 {
			st = "in_progress" // not ended: its results may still change
		}
		fake.PutRun("SHOP", map[string]any{"id": id, "status_text": st})
	}
	ids, err := c.RecentRuns(context.Background(), "SHOP", 5)
	if err != nil || !slices.Equal(ids, []int64{29, 28, 27, 26, 25}) {
		t.Fatalf("recent runs %v, %v; want the five newest ended runs", ids, err)
	}
}

// spec is the trimmed Qase OpenAPI document (testdata/contracts).
type spec struct {
	Paths map[string]struct {
		Get struct {
			Parameters []param `json:"parameters"`
		} `json:"get"`
	} `json:"paths"`
	Components struct {
		Parameters map[string]param `json:"parameters"`
	} `json:"components"`
}

type param struct {
	Ref         string `json:"$ref"`
	Name        string `json:"name"`
	In          string `json:"in"`
	Description string `json:"description"`
}

// TestResultRequestsMatchTheAPISpec: every request the failure reads make
// names a documented path and only documented query parameters (and, for
// results, a documented status value).
func TestResultRequestsMatchTheAPISpec(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "..", "testdata", "contracts", "qase.trimmed.json"))
	if err != nil {
		t.Fatal(err)
	}
	var sp spec
	if err := json.Unmarshal(raw, &sp); err != nil {
		t.Fatal(err)
	}
	fake, c, _ := setup(t)
	fake.AddProject("SHOP")
	seedRun(fake, 3, 2, 2)
	fake.PutCase("SHOP", map[string]any{"id": 1, "title": "x"})
	if _, err := qsync.ReadRun(context.Background(), c, "SHOP", 3); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.CaseTitle(context.Background(), "SHOP", 1); err != nil {
		t.Fatal(err)
	}
	if _, err := c.RecentRuns(context.Background(), "SHOP", 10); err != nil {
		t.Fatal(err)
	}
	reqs := fake.Requests()
	if len(reqs) < 5 {
		t.Fatalf("only %d requests logged", len(reqs))
	}
	for _, rq := range reqs {
		path := strings.TrimPrefix(rq.Path, "/v1")
		tmpl, ok := matchPath(sp, path)
		if !ok {
			t.Errorf("GET %s: no such path in the API spec", path)
			continue
		}
		declared := map[string]param{}
		for _, p := range sp.Paths[tmpl].Get.Parameters {
			if p.Ref != "" {
				p = sp.Components.Parameters[p.Ref[strings.LastIndex(p.Ref, "/")+1:]]
			}
			if p.In == "query" {
				declared[p.Name] = p
			}
		}
		for k, vs := range rq.Query {
			p, ok := declared[k]
			if !ok {
				t.Errorf("GET %s: query parameter %q is not in the spec for %s", path, k, tmpl)
				continue
			}
			if tmpl == "/result/{code}" && k == "status" && !strings.Contains(p.Description, vs[0]) {
				t.Errorf("GET %s: status %q is not a documented result status (%s)", path, vs[0], p.Description)
			}
		}
		if rq.Status != 200 {
			t.Errorf("GET %s?%s answered %d", path, rq.Query.Encode(), rq.Status)
		}
	}
}

func matchPath(sp spec, path string) (string, bool) {
	segs := strings.Split(strings.Trim(path, "/"), "/")
	for tmpl := range sp.Paths {
		ts := strings.Split(strings.Trim(tmpl, "/"), "/")
		if len(ts) != len(segs) {
			continue
		}
		match := true
		for i := range ts {
			if !strings.HasPrefix(ts[i], "{") && ts[i] != segs[i] {
				match = false
				break
			}
		}
		if match {
			return tmpl, true
		}
	}
	return "", false
}

var _ qsync.ResultSource = (*qase.Client)(nil)

func TestDecodeResultHints(t *testing.T) {
	now := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	for _, body := range []string{
		`{"event_name":"result.created","timestamp":1,"project_code":"SHOP","payload":{"hash":"abc","run_id":12}}`,
		`{"event_name":"result.updated","timestamp":1,"project_code":"SHOP","payload":{"run":{"id":"12"}}}`,
		`{"event":"result.created","timestamp":1,"project_code":"SHOP","payload":{"run":12}}`,
	} {
		ev, err := qase.Decode([]byte(body), qase.DecodeOptions{}, now)
		if err != nil || ev.Ref != (qsync.EntityRef{Project: "SHOP", Kind: qsync.KindRun, ID: 12}) || len(ev.Patch.Attrs) != 0 {
			t.Errorf("%s\n  = %+v, %v; want a bare hint for run SHOP/12", body, ev.Ref, err)
		}
	}
	for _, body := range []string{
		`{"event_name":"result.created","timestamp":1,"project_code":"SHOP","payload":{"hash":"abc"}}`,
		`{"event_name":"failure.created","timestamp":1,"project_code":"SHOP","payload":{"id":3}}`,
	} {
		if _, err := qase.Decode([]byte(body), qase.DecodeOptions{}, now); !errors.Is(err, qase.ErrUnservedKind) {
			t.Errorf("%s: err = %v, want ErrUnservedKind", body, err)
		}
	}
}

func TestRunResultsFailedStep(t *testing.T) {
	fake, c, _ := setup(t)
	fake.AddProject("SHOP")
	fake.PutResult("SHOP", map[string]any{"hash": "s1", "run_id": 9, "case_id": 1, "status": "failed", "steps": []any{
		map[string]any{"status": 1, "comment": "opened the page"},
		map[string]any{"status": 2, "comment": "checkout", "steps": []any{
			map[string]any{"status": 1},
			map[string]any{"status": 2, "comment": " button missing ", "attachments": []any{map[string]any{"url": "https://qase.example/step.png"}}},
		}},
	}})
	var got qsync.FailureResult
	err := c.RunResults(context.Background(), "SHOP", 9, "failed", func(r qsync.FailureResult) error { got = r; return nil })
	if err != nil {
		t.Fatal(err)
	}
	if got.FailedStep != "2.2: button missing" || !slices.Equal(got.Attachments, []string{"https://qase.example/step.png"}) {
		t.Fatalf("failed step %q attachments %v", got.FailedStep, got.Attachments)
	}
}
