package main

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// describer keeps what is registered, to list every series' name.
type describer struct{ cs []prometheus.Collector }

func (d *describer) Register(c prometheus.Collector) error   { d.cs = append(d.cs, c); return nil }
func (d *describer) MustRegister(cs ...prometheus.Collector) { d.cs = append(d.cs, cs...) }
func (d *describer) Unregister(prometheus.Collector) bool    { return false }

// Every series the service exports is in the operations guide's table.
func TestEveryMetricIsDocumented(t *testing.T) {
	reg := &describer{}
	newMetrics(reg, nil)
	doc, err := os.ReadFile("../../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	name := regexp.MustCompile(`fqName: "([a-z_]+)"`)
	descs := make(chan *prometheus.Desc, 64)
	go func() {
		for _, c := range reg.cs {
			c.Describe(descs)
		}
		close(descs)
	}()
	n := 0
	for d := range descs {
		m := name.FindStringSubmatch(d.String())
		if m == nil {
			t.Fatalf("no name in %s", d)
		}
		n++
		if !strings.Contains(string(doc), "`"+m[1]) {
			t.Errorf("%s is exported but not in docs/operations.md's metrics table", m[1])
		}
	}
	if n < 15 {
		t.Fatalf("%d series described, want every one (15 or more)", n)
	}
}
