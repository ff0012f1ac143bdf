package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	qsync "github.com/qase-sync/qase-sync/sync"
)

// writeIndented prints v as indented JSON (the commands' -o json).
func writeIndented(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// storeCommand is the prologue of a command that needs only the store
// (explain, prune): the common flags, exactly npos positional arguments
// (else usage), and the app on its store, which the caller closes.
func storeCommand(name string, args []string, npos int, usage string, stderr io.Writer) (*app, commonFlags, []string, error) {
	c, pos, err := commonArgs(name, args, stderr)
	if err != nil {
		return nil, c, nil, err
	}
	if len(pos) != npos {
		return nil, c, nil, fmt.Errorf("%w: %s", errUsage, usage)
	}
	a, err := loadApp(c.config, stderr, appStoreOnly)
	return a, c, pos, err
}

// flagsThenApp parses a command's flags (fs, with the common ones in c)
// and loads the app its configuration names.
func flagsThenApp(fs *flag.FlagSet, c *commonFlags, args []string, stderr io.Writer, mode appMode) (*app, error) {
	if _, err := parseFlags(fs, args); err != nil {
		return nil, err
	}
	return loadApp(c.config, stderr, mode)
}

func cmdValidate(args []string, stdout, stderr io.Writer) error {
	c, _, err := commonArgs("validate", args, stderr)
	if err != nil {
		return err
	}
	a, err := loadApp(c.config, stderr, appValidate)
	if c.output == "json" {
		return validateJSON(stdout, c.config, a, err)
	}
	if err != nil {
		return err
	}
	for _, n := range a.mapper.Notes() {
		fmt.Fprintf(stdout, "note: %s\n", n)
	}
	fmt.Fprintf(stdout, "%s: OK (%d trackers, %d routes: %s)\n", c.config, len(a.cfg.Trackers), len(a.mapper.RouteNames()), strings.Join(a.mapper.RouteNames(), ", "))
	return nil
}

// validateResult is what validate -o json prints.
type validateResult struct {
	File     string   `json:"file"`
	Valid    bool     `json:"valid"`
	Problems []string `json:"problems,omitempty"` // "file:line: field: problem"
	Trackers []string `json:"trackers,omitempty"`
	Routes   []string `json:"routes,omitempty"`
}

// errInvalid ends validate -o json with exit status 1 after the JSON has
// said everything (nothing more is printed).
var errInvalid = errors.New("configuration is not valid")

func validateJSON(stdout io.Writer, file string, a *app, err error) error {
	res := validateResult{File: file, Valid: err == nil}
	if err != nil {
		for _, l := range strings.Split(strings.TrimSpace(err.Error()), "\n") {
			if l = strings.TrimSpace(l); l != "" {
				res.Problems = append(res.Problems, l)
			}
		}
	} else {
		for _, t := range a.cfg.Trackers {
			res.Trackers = append(res.Trackers, t.Name)
		}
		res.Routes = a.mapper.RouteNames()
	}
	if werr := writeIndented(stdout, res); werr != nil {
		return werr
	}
	if err != nil {
		return errInvalid
	}
	return nil
}

// reconcileSummary is what a one-shot reconcile prints.
type reconcileSummary struct {
	qsync.ReconcileReport
	Fixed   map[string]int `json:"fixed_by_class,omitempty"`
	Applied int            `json:"applied"`
	Noop    int            `json:"noop"`
	Retry   int            `json:"retrying"`
	Dead    int            `json:"dead"`
	// Queued counts keys whose sync had not finished when the command
	// stopped waiting: a running service syncs them; this run only
	// enqueued them.
	Queued int `json:"still_queued"`
}

// count adds one key's outcome.
func (s *reconcileSummary) count(outcome qsync.Outcome, retrying bool, drift []string) {
	switch {
	case retrying:
		s.Retry++
	case outcome == qsync.OutcomeDead:
		s.Dead++
	case outcome == qsync.OutcomeApplied:
		s.Applied++
	default:
		s.Noop++
	}
	if len(drift) > 0 {
		s.Drifted++
	}
	for _, cl := range drift {
		s.ByClass[cl]++
		if cl == qsync.DriftDuplicate {
			s.Duplicates++
		}
		if !retrying && outcome != qsync.OutcomeDead {
			s.Fixed[cl]++
		}
	}
}

func cmdReconcile(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var c commonFlags
	var routes multiFlag
	var dry bool
	var wait time.Duration
	fs := newFlagSet("reconcile", stderr, &c)
	fs.Var(&routes, "route", "only this route (repeatable)")
	fs.BoolVar(&dry, "dry-run", false, "show the drift per key and change nothing")
	var incremental bool
	fs.BoolVar(&incremental, "incremental", false, "read only what Qase changed since the last pass (a full sweep if none ran within reconcile.full_every)")
	fs.DurationVar(&wait, "wait", 2*time.Minute, "how long to wait for keys a running service is syncing")
	a, err := flagsThenApp(fs, &c, args, stderr, appCLI)
	if err != nil {
		return err
	}
	defer a.close()
	rc := a.cfg.Reconcile
	rep, err := a.engine.Reconcile(ctx, qsync.ReconcileOptions{Routes: routes, Projects: reconcileProjects(a.cfg), DryRun: dry,
		Incremental: incremental, FullEvery: rc.FullEvery, Overlap: rc.Overlap})
	if err != nil {
		return err
	}
	sum := reconcileSummary{ReconcileReport: rep, Fixed: map[string]int{}}
	if !dry {
		if err := a.reportPass(ctx, &sum, wait); err != nil {
			return err
		}
	}
	a.log.WithField("summary", sum).Info("reconcile finished")
	if c.output == "json" {
		return writeIndented(stdout, sum)
	}
	mode := "reconcile"
	if dry {
		mode = "reconcile (dry run: nothing changed)"
	}
	fmt.Fprintf(stdout, "%s: checked %d keys, drifted %d, duplicates %d, failed %d\n", mode, sum.Checked, sum.Drifted, sum.Duplicates, sum.Failed+sum.Dead)
	if !dry {
		fmt.Fprintf(stdout, "  %s pass: %d keys in sync (nothing written), %d enqueued\n", sum.Mode, sum.Unchanged, sum.Enqueued)
	}
	if len(sum.FullOnly) > 0 {
		fmt.Fprintf(stdout, "  not searchable, left to full sweeps: %v\n", sum.FullOnly)
	}
	if sum.Queued > 0 {
		fmt.Fprintf(stdout, "  %d keys still queued: a running service syncs them (this run only enqueued them)\n", sum.Queued)
	}
	for _, cl := range slices.Sorted(maps.Keys(sum.ByClass)) {
		fmt.Fprintf(stdout, "  %-10s found %d", cl, sum.ByClass[cl])
		if !dry {
			fmt.Fprintf(stdout, ", fixed %d", sum.Fixed[cl])
		}
		fmt.Fprintln(stdout)
	}
	if !dry {
		fmt.Fprintf(stdout, "  jobs: applied %d, no-op %d, retrying %d, dead-lettered %d\n", sum.Applied, sum.Noop, sum.Retry, sum.Dead)
	}
	for _, k := range rep.Keys {
		fmt.Fprintf(stdout, "\n%s", k.Key)
		if k.Issue != "" {
			fmt.Fprintf(stdout, " (%s)", k.Issue)
		}
		fmt.Fprintf(stdout, ": %s\n", strings.Join(k.Drift, ", "))
		if k.Problem != "" {
			fmt.Fprintf(stdout, "  problem: %s\n", k.Problem)
		}
		for _, op := range k.Ops {
			fmt.Fprintf(stdout, "  would %s\n", describeOp(op))
			for _, ch := range op.Changes {
				fmt.Fprintf(stdout, "    %s: %s → %s\n", ch.Field, quote(ch.From), quote(ch.To))
			}
		}
	}
	return nil
}

// reportPass works the queue in this process and reports what the pass
// caused for each of its keys, whichever process synced it: the ledger
// entries written since the pass started. A key another process (the
// running service) is still syncing is waited for up to wait, then counted
// as queued.
func (a *app) reportPass(ctx context.Context, sum *reconcileSummary, wait time.Duration) error {
	sum.ByClass, sum.Duplicates, sum.Drifted = map[string]int{}, 0, 0
	done := map[qsync.Key]bool{}
	var mu sync.Mutex
	deadline := time.Now().Add(wait)
	pending := sum.KeyList
	for {
		err := a.engine.ProcessUntilIdle(ctx, func(j qsync.Job, res qsync.Result, err error) {
			mu.Lock()
			defer mu.Unlock()
			if done[j.Key] || res.Plan.Wait > 0 {
				return // settling: it runs again shortly
			}
			done[j.Key] = true
			outcome := res.Outcome
			if qsync.IsPermanent(err) {
				outcome = qsync.OutcomeDead
			}
			sum.count(outcome, err != nil && !qsync.IsPermanent(err), res.Drift)
		})
		if err != nil {
			return err
		}
		var still []qsync.Key
		for _, k := range pending {
			if done[k] {
				continue
			}
			entries, err := a.store.Ledger(ctx, k, 5)
			if err != nil {
				return err
			}
			if i := slices.IndexFunc(entries, func(e qsync.LedgerEntry) bool { return !e.At.Before(sum.Started) }); i >= 0 {
				done[k] = true
				sum.count(entries[i].Outcome, false, entries[i].Drift)
				continue
			}
			still = append(still, k)
		}
		pending = still
		if len(pending) == 0 || time.Now().After(deadline) || ctx.Err() != nil {
			sum.Queued = len(pending)
			return nil
		}
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func quote(v any) string {
	b, _ := json.Marshal(v)
	s := string(b)
	if len(s) > 120 {
		s = s[:117] + "…"
	}
	return s
}

func cmdLinks(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var c commonFlags
	var routes multiFlag
	var entity, issue, jql, label, match string
	fs := newFlagSet("links", stderr, &c)
	fs.Var(&routes, "route", "only this route (repeatable; adopt: exactly one)")
	fs.StringVar(&entity, "entity", "", "adopt: the Qase entity, PROJECT/KIND/ID")
	fs.StringVar(&issue, "issue", "", "adopt: the tracker issue (Jira key, GitHub owner/repo#N or N)")
	fs.StringVar(&jql, "jql", "", "adopt in bulk: the Jira issues this JQL finds")
	fs.StringVar(&label, "label", "", "adopt in bulk: the GitHub issues carrying this label")
	fs.StringVar(&match, "match", "", "adopt in bulk: regexp finding the entity in an issue title (named groups project, id)")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	const usage = "links rebuild -c FILE [--route R] | links adopt -c FILE --route R (--entity P/KIND/ID --issue KEY | --jql Q | --label L [--match RE])"
	if len(pos) != 1 || (pos[0] != "rebuild" && pos[0] != "adopt") {
		return fmt.Errorf("%w: %s", errUsage, usage)
	}
	a, err := loadApp(c.config, stderr, appCLI)
	if err != nil {
		return err
	}
	defer a.close()
	if pos[0] == "adopt" {
		return a.adopt(ctx, adoptArgs{routes: routes, entity: entity, issue: issue, jql: jql, label: label, match: match, json: c.output == "json"}, stdout)
	}
	n, err := a.engine.RebuildLinks(ctx, routes)
	if err != nil {
		return err
	}
	if c.output == "json" {
		return json.NewEncoder(stdout).Encode(map[string]int{"restored": n})
	}
	fmt.Fprintf(stdout, "restored %d links from tracker markers\n", n)
	return nil
}

func cmdDeadLetters(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c, pos, err := commonArgs("deadletters", args, stderr)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		return fmt.Errorf("%w: deadletters list|show ID|retry ID|drop ID", errUsage)
	}
	verb := pos[0]
	var id int64
	if verb != "list" {
		if len(pos) != 2 {
			return fmt.Errorf("%w: deadletters %s ID", errUsage, verb)
		}
		if id, err = strconv.ParseInt(pos[1], 10, 64); err != nil {
			return fmt.Errorf("%w: dead letter id %q is not a number", errUsage, pos[1])
		}
	}
	a, err := loadApp(c.config, stderr, appStoreOnly)
	if err != nil {
		return err
	}
	defer a.close()
	st := a.store
	emit := func(v any) error { return writeIndented(stdout, v) }
	switch verb {
	case "list":
		dls, err := st.DeadLetters(ctx, 1000)
		if err != nil {
			return err
		}
		if c.output == "json" {
			return emit(dls)
		}
		if len(dls) == 0 {
			fmt.Fprintln(stdout, "no dead letters")
			return nil
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tKEY\tATTEMPTS\tSINCE\tREASON")
		for _, d := range dls {
			fmt.Fprintf(tw, "%d\t%s\t%d\t%s\t%s\n", d.ID, d.Key, d.Attempts, d.CreatedAt.Format("2006-01-02 15:04:05Z"), oneLine(d.Reason, 100))
		}
		return tw.Flush()
	case "show":
		d, found, err := st.DeadLetter(ctx, id)
		if err != nil {
			return err
		}
		if !found {
			return fmt.Errorf("dead letter %d: %w", id, qsync.ErrNotFound)
		}
		if c.output == "json" {
			return emit(d)
		}
		fmt.Fprintf(stdout, "id:       %d\nkey:      %s\nattempts: %d\nsince:    %s\nreason:   %s\nrequest:  %s\n", d.ID, d.Key, d.Attempts, d.CreatedAt.Format("2006-01-02 15:04:05Z07:00"), d.Reason, d.LastRequest)
		return nil
	case "retry":
		if err := st.RetryDeadLetter(ctx, id, a.clock.Now()); err != nil {
			return fmt.Errorf("dead letter %d: %w", id, err)
		}
		fmt.Fprintf(stdout, "dead letter %d requeued; the service will sync it\n", id)
		return nil
	case "drop":
		if err := st.DropDeadLetter(ctx, id); err != nil {
			return fmt.Errorf("dead letter %d: %w", id, err)
		}
		fmt.Fprintf(stdout, "dead letter %d dropped\n", id)
		return nil
	}
	return fmt.Errorf("%w: deadletters list|show ID|retry ID|drop ID", errUsage)
}

func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > n {
		return s[:n-1] + "…"
	}
	return s
}
