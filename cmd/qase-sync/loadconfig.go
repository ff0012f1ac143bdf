package main

import (
	"strings"

	"github.com/qase-sync/qase-sync/config"
	"github.com/qase-sync/qase-sync/internal/yamlpos"
	"github.com/qase-sync/qase-sync/mapping"
)

// loadConfig loads the configuration file and hands its mapping: section
// to package mapping, checked against the trackers the file defines. Every
// problem of both comes back at once, sorted by line, as
// "file:line: field: problem".
func loadConfig(path string, env func(string) (string, bool)) (*config.Config, *mapping.Mapping, error) {
	cfg, err := config.Load(path, env)
	if cfg == nil {
		return nil, nil, err // unreadable, or not YAML at all
	}
	var ps yamlpos.Problems
	ps.Add(path, err)
	m, err := mapping.ParseNode(cfg.File, cfg.Mapping, mapping.Options{
		Trackers:    cfg.ValidTrackers(),
		ReadFile:    config.ReadFile,
		Vars:        map[string]string{"qase_url": cfg.Qase.AppURL},
		FieldPrefix: "mapping",
	})
	var mps yamlpos.Problems
	mps.Add(path, err)
	defined := map[string]bool{}
	for _, t := range cfg.Trackers {
		defined[t.Name] = true
	}
	for _, p := range mps {
		// A route naming a tracker that is defined but invalid would be
		// reported twice; the tracker's own problem is enough.
		if strings.HasSuffix(p.Field, ".tracker") && strings.Contains(p.Msg, "is not defined") && defined[quoted(p.Msg)] {
			continue
		}
		ps = append(ps, p)
	}
	if m != nil {
		for i, r := range cfg.Reconcile.Routes {
			if _, ok := m.RouteInfo(r); !ok {
				ps = append(ps, cfg.Problem(yamlpos.Elem("reconcile.routes", i), "unknown route %q", r))
			}
		}
		// Failed results exist only in the Qase API: no webhook carries them.
		if fr := m.FailureRoutes(); len(fr) > 0 && !cfg.Qase.APIToken.IsSet() {
			ps = append(ps, cfg.Problem("qase.api_token", "required: route %s files failed test results, which only the Qase API serves (set api_token or api_token_file)", strings.Join(fr, ", ")))
		}
		ps = append(ps, twoWayProblems(cfg, m)...)
	}
	if err := ps.Err(); err != nil {
		return nil, nil, err
	}
	return cfg, m, nil
}

// quoted returns the first "quoted" word of s.
func quoted(s string) string {
	_, rest, ok := strings.Cut(s, `"`)
	if !ok {
		return ""
	}
	q, _, ok := strings.Cut(rest, `"`)
	if !ok {
		return ""
	}
	return q
}

// twoWayProblems: a route that writes tracker changes (or links) back to
// Qase needs the Qase API.
func twoWayProblems(cfg *config.Config, m *mapping.Mapping) yamlpos.Problems {
	var ps yamlpos.Problems
	for i, tc := range cfg.Trackers {
		if p := "/webhooks/" + tc.Name; len(tc.WebhookSecrets) > 0 && (p == cfg.Server.WebhookPath || strings.HasPrefix(cfg.Server.WebhookPath+"/", p+"/")) {
			ps = append(ps, cfg.Problem(yamlpos.Elem("trackers", i)+".webhook_secrets", "the tracker's webhook path %s collides with server.webhook_path %s; rename the tracker", p, cfg.Server.WebhookPath))
		}
	}
	if cfg.Qase.APIToken.IsSet() || cfg.Qase.APITokenFile != "" {
		return ps
	}
	for _, name := range m.RouteNames() {
		tw, ok := m.TwoWay(name)
		wb := m.WriteBackOf(name)
		if (ok && tw.Inbound()) || wb.RunIssue || wb.CaseIssue {
			ps = append(ps, cfg.Problem("qase.api_token", "route %s writes back to Qase (two_way or write_back): set qase.api_token", name))
		}
	}
	return ps
}
