package qase

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/qase-sync/qase-sync/adapters/qase/qasefake"
	qsync "github.com/qase-sync/qase-sync/sync"
)

func at(s string) string { return s + "T10:00:00+00:00" }

// Changed pages through GET /search and reports only the defects updated
// at or after since, with the attrs a listing gives.
func TestChangedReadsOnlyUpdatedDefects(t *testing.T) {
	fake := qasefake.New("tok")
	defer fake.Close()
	for i := 1; i <= 250; i++ {
		fake.PutDefect("QA", map[string]any{"id": i, "title": fmt.Sprint("old ", i), "status": "open", "updated_at": at("2025-01-01")})
	}
	for _, id := range []int{7, 120, 249} {
		fake.PutDefect("QA", map[string]any{"id": id, "title": "new", "status": "resolved", "updated_at": at("2025-06-01")})
	}
	fake.PutDefect("OTHER", map[string]any{"id": 1, "title": "other project", "updated_at": at("2025-06-01")})
	c := NewClient(ClientOptions{BaseURL: fake.URL, Token: "tok"})
	ctx := context.Background()

	var got []int64
	err := c.Changed(ctx, "QA", qsync.KindDefect, time.Date(2025, 5, 1, 0, 0, 0, 0, time.UTC), func(ref qsync.EntityRef, attrs map[string]any) error {
		if ref.Project != "QA" || ref.Kind != qsync.KindDefect || attrs["title"] != "new" || attrs["status"] != "resolved" {
			t.Errorf("%v: %v", ref, attrs)
		}
		got = append(got, ref.ID)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, []int64{7, 120, 249}) {
		t.Errorf("changed = %v, want 7, 120, 249", got)
	}
	if n := fake.Calls()["GET /search"]; n != 1 {
		t.Errorf("searches = %d, want 1", n)
	}

	fake.ResetRequests()
	got = nil
	if err := c.Changed(ctx, "QA", qsync.KindDefect, time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC), func(ref qsync.EntityRef, _ map[string]any) error {
		got = append(got, ref.ID)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(got) != 250 {
		t.Errorf("all since 2024: %d defects, want 250", len(got))
	}
	if n := fake.Calls()["GET /search"]; n != 3 {
		t.Errorf("searches for 250 = %d, want 3 pages", n)
	}
}

// Past the offset cap the search starts again from the newest update
// seen: a burst larger than one scan can reach is still read whole.
func TestChangedRestartsAtTheOffsetCap(t *testing.T) {
	fake := capped(t, 200)
	base := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := 1; i <= 450; i++ {
		fake.PutDefect("QA", map[string]any{"id": i, "updated_at": base.Add(time.Duration(i/3) * time.Second).Format(time.RFC3339)})
	}
	c := NewClient(ClientOptions{BaseURL: fake.URL, Token: "tok"})
	seen := map[int64]bool{}
	if err := c.Changed(context.Background(), "QA", qsync.KindDefect, base, func(ref qsync.EntityRef, _ map[string]any) error {
		seen[ref.ID] = true
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(seen) != 450 {
		t.Errorf("read %d distinct defects, want 450", len(seen))
	}
	for _, r := range fake.Requests() {
		if r.Status != http.StatusOK {
			t.Errorf("%s?%s answered %d", r.Path, r.Query.Encode(), r.Status)
		}
	}
}

// Only defects can be searched by update time; a query Qase refuses is a
// permanent error (the reconciler lists instead).
func TestChangedRefusals(t *testing.T) {
	fake := qasefake.New("tok")
	defer fake.Close()
	c := NewClient(ClientOptions{BaseURL: fake.URL, Token: "tok"})
	if !c.Searchable(qsync.KindDefect) || c.Searchable(qsync.KindRun) || c.Searchable(qsync.KindReview) {
		t.Error("searchable kinds: want defects only")
	}
	nop := func(qsync.EntityRef, map[string]any) error { return nil }
	if err := c.Changed(context.Background(), "QA", qsync.KindRun, time.Now(), nop); !qsync.IsPermanent(err) {
		t.Errorf("run search: %v, want permanent", err)
	}
	if fake.RequestCount() != 0 {
		t.Error("an unsearchable kind was sent to Qase")
	}
	fake.FailNext(1, http.StatusBadRequest, nil, `{"status":false,"errorMessage":"Invalid query"}`)
	if err := c.Changed(context.Background(), "QA", qsync.KindDefect, time.Now(), nop); !qsync.IsPermanent(err) {
		t.Errorf("refused query: %v, want permanent", err)
	}
	if _, err := SearchQuery(`Q"A`, qsync.KindDefect, time.Now()); !qsync.IsPermanent(err) {
		t.Errorf("a project code with a quote: %v, want refused", err)
	}
}

// param is an operation's parameter in the spec.
type param struct {
	Name   string `json:"name"`
	In     string `json:"in"`
	Schema struct {
		Minimum   *int `json:"minimum"`
		Maximum   *int `json:"maximum"`
		MinLength *int `json:"minLength"`
		MaxLength *int `json:"maxLength"`
	} `json:"schema"`
	Required bool `json:"required"`
}

// contract is the trimmed Qase spec of GET /search.
type contract struct {
	Paths map[string]map[string]struct {
		Parameters []param `json:"parameters"`
	} `json:"paths"`
	Schemas map[string]struct {
		AllOf []struct {
			Properties map[string]struct {
				Required []string `json:"required"`
			} `json:"properties"`
		} `json:"allOf"`
		Required []string `json:"required"`
	} `json:"schemas"`
}

// The requests Changed sends, and the answers the fake gives, fit the
// published spec (testdata/contracts/qase.search.trimmed.json, trimmed
// from qase/api-v1.yaml): GET /search with the declared query parameters
// in range, and results carrying the required fields.
func TestSearchContract(t *testing.T) {
	b, err := os.ReadFile("../../testdata/contracts/qase.search.trimmed.json")
	if err != nil {
		t.Fatal(err)
	}
	var spec contract
	if err := json.Unmarshal(b, &spec); err != nil {
		t.Fatal(err)
	}
	op, ok := spec.Paths["/search"]["get"]
	if !ok {
		t.Fatal("the spec has no GET /search")
	}
	fake := capped(t, 200)
	for i := 1; i <= 230; i++ {
		fake.PutDefect("QA", map[string]any{"id": i})
	}
	c := NewClient(ClientOptions{BaseURL: fake.URL, Token: "tok"})
	n := 0
	if err := c.Changed(context.Background(), "QA", qsync.KindDefect, time.Now().Add(-time.Hour), func(qsync.EntityRef, map[string]any) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	if n != 230 {
		t.Fatalf("read %d, want 230", n)
	}
	reqs := fake.Requests()
	if len(reqs) == 0 {
		t.Fatal("no request sent")
	}
	for _, r := range reqs {
		if r.Method != http.MethodGet || r.Path != "/v1/search" {
			t.Errorf("%s %s: not GET /search", r.Method, r.Path)
			continue
		}
		for name := range r.Query {
			if !slices.ContainsFunc(op.Parameters, func(p param) bool {
				return p.Name == name && p.In == "query"
			}) {
				t.Errorf("query parameter %q is not in the spec", name)
			}
		}
		for _, p := range op.Parameters {
			v, set := r.Query[p.Name]
			if p.Required && !set {
				t.Errorf("required parameter %q missing", p.Name)
			}
			if !set {
				continue
			}
			checkRange(t, p.Name, v[0], p.Schema.Minimum, p.Schema.Maximum, p.Schema.MinLength, p.Schema.MaxLength)
		}
	}
	// The answer: result.entities and result.total, defect_id on each.
	u := fake.URL + "/search?" + url.Values{"query": {`entity = "defect" and project = "QA"`}, "limit": {"5"}}.Encode()
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	req.Header.Set("Token", "tok")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Result map[string]json.RawMessage `json:"result"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	for _, f := range spec.Schemas["SearchResponse"].AllOf[1].Properties["result"].Required {
		if _, ok := body.Result[f]; !ok {
			t.Errorf("result lacks required %q", f)
		}
	}
	var ents []map[string]any
	_ = json.Unmarshal(body.Result["entities"], &ents)
	if len(ents) != 5 {
		t.Fatalf("%d entities, want 5", len(ents))
	}
	for _, e := range ents {
		for _, f := range spec.Schemas["qql.Defect"].Required {
			if _, ok := e[f]; !ok {
				t.Errorf("defect record lacks required %q: %v", f, e)
			}
		}
	}
}

func checkRange(t *testing.T, name, v string, minimum, maximum, minLen, maxLen *int) {
	t.Helper()
	if minLen != nil && len(v) < *minLen || maxLen != nil && len(v) > *maxLen {
		t.Errorf("%s: length %d outside the spec's bounds", name, len(v))
	}
	if minimum == nil && maximum == nil {
		return
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		t.Errorf("%s = %q: not an integer", name, v)
		return
	}
	if minimum != nil && n < *minimum || maximum != nil && n > *maximum {
		t.Errorf("%s = %d outside [%v, %v]", name, n, *minimum, *maximum)
	}
}
