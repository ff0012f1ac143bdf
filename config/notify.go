package config

import (
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/qase-sync/qase-sync/internal/yamlpos"
)

// Notifier is one notification route: where operators hear about dead
// letters, repeated drift and a project gone silent.
type Notifier struct {
	Name string `yaml:"name" json:"name"`
	// Type is slack (an incoming webhook: {"text": …}) or webhook (a
	// generic JSON POST of the notification).
	Type string `yaml:"type" json:"type"`
	// URL is a credential (a Slack incoming-webhook URL grants posting):
	// never logged; url_file reads it from a file.
	URL     Secret `yaml:"url" json:"url"`
	URLFile string `yaml:"url_file,omitempty" json:"url_file,omitempty"`
	// On lists the notifications sent: dead_letter, drift, silent_project
	// (default: all three).
	On []string `yaml:"on,omitempty" json:"on,omitempty"`
	// PerMinute and Burst rate-limit the route (default 6/min, burst 3);
	// what the limit holds back is summarized in the next message.
	PerMinute float64 `yaml:"per_minute" json:"per_minute"`
	Burst     int     `yaml:"burst" json:"burst"`
	// DriftPasses: a route drifting in this many consecutive reconcile
	// passes is "repeated drift" (default 2).
	DriftPasses int `yaml:"drift_passes" json:"drift_passes"`
	// SilentAfter: a Qase project with no delivery for this long is
	// silent (default 24h). Projects lists the ones to watch (default:
	// every project that has delivered).
	SilentAfter time.Duration `yaml:"silent_after" json:"silent_after"`
	Projects    []string      `yaml:"projects,omitempty" json:"projects,omitempty"`
	// Interval is how often the conditions are checked (default 1m).
	Interval time.Duration `yaml:"interval" json:"interval"`
}

// Notification kinds.
const (
	NotifyDeadLetter    = "dead_letter"
	NotifyDrift         = "drift"
	NotifySilentProject = "silent_project"
)

var notifyKinds = []string{NotifyDeadLetter, NotifyDrift, NotifySilentProject}

// UnmarshalYAML fills a notifier's defaults, then decodes it (strictly).
func (n *Notifier) UnmarshalYAML(unmarshal func(any) error) error {
	*n = Notifier{PerMinute: 6, Burst: 3, DriftPasses: 2, SilentAfter: 24 * time.Hour, Interval: time.Minute}
	type plain Notifier
	if err := unmarshal((*plain)(n)); err != nil {
		return err
	}
	n.Type = strings.ToLower(n.Type)
	if len(n.On) == 0 {
		n.On = slices.Clone(notifyKinds)
	}
	return nil
}

// validateNotify checks the notify: list (after url_file was read).
func (l *checker) validateNotify() {
	names := map[string]bool{}
	for i, nt := range l.c.Notify {
		field := yamlpos.Elem("notify", i)
		switch {
		case nt.Name == "":
			l.errf(field+".name", "required")
		case names[nt.Name]:
			l.errf(field+".name", "duplicate notifier name %q", nt.Name)
		}
		names[nt.Name] = true
		if nt.Type != "slack" && nt.Type != "webhook" {
			l.errf(field+".type", "unknown notifier type %q (slack or webhook)", nt.Type)
		}
		if !nt.URL.IsSet() {
			if nt.URLFile == "" {
				l.errf(field+".url", "required (or url_file)")
			}
		} else if u, err := url.Parse(nt.URL.Reveal()); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			l.errf(field+".url", "not an http(s) URL") // the value is a secret: not repeated
		}
		for j, k := range nt.On {
			if !slices.Contains(notifyKinds, k) {
				l.errf(yamlpos.Elem(field+".on", j), "unknown notification %q (%s)", k, strings.Join(notifyKinds, ", "))
			}
		}
		if nt.PerMinute <= 0 || nt.Burst < 1 {
			l.errf(field+".per_minute", "per_minute must be > 0 and burst >= 1")
		}
		if nt.DriftPasses < 1 {
			l.errf(field+".drift_passes", "must be at least 1")
		}
		if nt.SilentAfter < time.Minute || nt.Interval <= 0 {
			l.errf(field+".silent_after", "silent_after must be at least 1m and interval positive")
		}
	}
}
