package config

import (
	"net/url"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/qase-sync/qase-sync/mapping/yamlnode"
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
	URL Secret `yaml:"url" json:"url"`
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

// decodeNotify decodes and checks the notify: list.
func (l *loader) decodeNotify(n *yaml.Node) []Notifier {
	var out []Notifier
	names := map[string]bool{}
	for i, item := range l.d.Items(n, "notify") {
		field := yamlnode.Index("notify", i)
		f := l.fields(item, field, "name", "type", "url", "url_file", "on", "per_minute", "burst", "drift_passes", "silent_after", "projects", "interval")
		nt := Notifier{
			Name: l.str(f, field, "name", ""), Type: strings.ToLower(l.str(f, field, "type", "")), URL: l.secret(f, field, "url"),
			On:          l.d.Strings(f["on"], yamlnode.Join(field, "on")),
			PerMinute:   l.d.Float(f["per_minute"], yamlnode.Join(field, "per_minute"), 6),
			Burst:       int(l.d.Int(f["burst"], yamlnode.Join(field, "burst"), 3)),
			DriftPasses: int(l.d.Int(f["drift_passes"], yamlnode.Join(field, "drift_passes"), 2)),
			SilentAfter: l.dur(f, field, "silent_after", 24*time.Hour),
			Projects:    l.d.Strings(f["projects"], yamlnode.Join(field, "projects")),
			Interval:    l.dur(f, field, "interval", time.Minute),
		}
		if len(nt.On) == 0 {
			nt.On = slices.Clone(notifyKinds)
		}
		switch {
		case nt.Name == "":
			l.errf(yamlnode.Join(field, "name"), "required")
		case names[nt.Name]:
			l.errf(yamlnode.Join(field, "name"), "duplicate notifier name %q", nt.Name)
		}
		names[nt.Name] = true
		if nt.Type != "slack" && nt.Type != "webhook" {
			l.errf(yamlnode.Join(field, "type"), "unknown notifier type %q (slack or webhook)", nt.Type)
		}
		if !nt.URL.IsSet() {
			l.errf(yamlnode.Join(field, "url"), "required (or url_file)")
		} else if u, err := url.Parse(nt.URL.Reveal()); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			l.errf(yamlnode.Join(field, "url"), "not an http(s) URL") // the value is a secret: not repeated
		}
		for j, k := range nt.On {
			if !slices.Contains(notifyKinds, k) {
				l.errf(yamlnode.Index(yamlnode.Join(field, "on"), j), "unknown notification %q (%s)", k, strings.Join(notifyKinds, ", "))
			}
		}
		if nt.PerMinute <= 0 || nt.Burst < 1 {
			l.errf(yamlnode.Join(field, "per_minute"), "per_minute must be > 0 and burst >= 1")
		}
		if nt.DriftPasses < 1 {
			l.errf(yamlnode.Join(field, "drift_passes"), "must be at least 1")
		}
		if nt.SilentAfter < time.Minute || nt.Interval <= 0 {
			l.errf(yamlnode.Join(field, "silent_after"), "silent_after must be at least 1m and interval positive")
		}
		out = append(out, nt)
	}
	return out
}
