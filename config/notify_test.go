package config

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestNotifyConfig(t *testing.T) {
	env := func(k string) (string, bool) {
		if k == "SLACK_URL" {
			return "https://hooks.slack.com/services/T0/B0/verysecret", true
		}
		return "", false
	}
	src := "qase: {secrets: [s]}\nnotify:\n  - name: ops\n    type: slack\n    url: ${SLACK_URL}\n  - name: hook\n    type: webhook\n    url: https://example.com/hook\n    on: [dead_letter]\n    per_minute: 2\n    silent_after: 6h\n"
	c, err := Parse("c.yaml", []byte(src), env)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Notify) != 2 {
		t.Fatalf("notify = %+v", c.Notify)
	}
	ops, hook := c.Notify[0], c.Notify[1]
	if ops.URL.Reveal() != "https://hooks.slack.com/services/T0/B0/verysecret" || len(ops.On) != 3 || ops.PerMinute != 6 || ops.Burst != 3 ||
		ops.DriftPasses != 2 || ops.SilentAfter != 24*time.Hour || ops.Interval != time.Minute {
		t.Errorf("defaults: %+v", ops)
	}
	if hook.PerMinute != 2 || hook.SilentAfter != 6*time.Hour || len(hook.On) != 1 {
		t.Errorf("hook: %+v", hook)
	}
	if s := fmt.Sprintf("%v %+v", c.Notify, c.Notify); strings.Contains(s, "verysecret") {
		t.Error("a notifier URL is printable")
	}

	for _, c := range []struct{ src, want string }{
		{"notify:\n  - {name: a, type: teams, url: 'https://x.example/h'}\n", `c.yaml:3: notify[0].type: unknown notifier type "teams"`},
		{"notify:\n  - {name: a, type: slack}\n", "notify[0].url: required"},
		{"notify:\n  - {name: a, type: slack, url: 'ftp://x/verysecret'}\n", "notify[0].url: not an http(s) URL"},
		{"notify:\n  - {name: a, type: slack, url: 'https://x/h', on: [fire]}\n", `notify[0].on[0]: unknown notification "fire"`},
		{"notify:\n  - {name: a, type: slack, url: 'https://x/h'}\n  - {name: a, type: slack, url: 'https://x/h'}\n", `notify[1].name: duplicate notifier name "a"`},
		{"notify:\n  - {name: a, type: slack, url: 'https://x/h', per_minute: 0}\n", "per_minute must be > 0"},
	} {
		_, err := Parse("c.yaml", []byte("qase: {secrets: [s]}\n"+c.src), nil)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: %v, want %q", c.src, err, c.want)
		}
		if err != nil && strings.Contains(err.Error(), "verysecret") {
			t.Errorf("an error repeats the URL: %v", err)
		}
	}
}
