// Command qase-sync mirrors Qase events into Jira and GitHub issues.
//
//	qase-sync serve       -c config.yaml
//	qase-sync validate    -c config.yaml
//	qase-sync plan        -c config.yaml --event testdata/qase/defect.created.json
//	qase-sync reconcile   -c config.yaml [--route R] [--dry-run] [--incremental] [--output json]
//	qase-sync links rebuild -c config.yaml [--route R]
//	qase-sync deadletters list|show|retry|drop [ID] -c config.yaml
//	qase-sync explain QA-1 | ID/defect/1 -c config.yaml
//	qase-sync prune       -c config.yaml
//	qase-sync version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

var version = "dev"

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

// errUsage marks a command-line mistake (exit status 2).
var errUsage = errors.New("usage")

const usage = `qase-sync mirrors Qase test-management events into Jira and GitHub issues.

Usage:
  qase-sync serve       -c FILE                 run the webhook receiver, workers and scheduled reconciler
  qase-sync validate    -c FILE                 check the configuration and mapping tables
  qase-sync plan        -c FILE --event FILE [--project CODE]
                                                show what the webhook would do with an event (sends nothing)
  qase-sync reconcile   -c FILE [--route R]... [--dry-run] [--incremental] [--output text|json]
  qase-sync links rebuild -c FILE [--route R]...  restore correlation links from the markers in the trackers
  qase-sync links adopt -c FILE --route R --entity PROJECT/KIND/ID --issue KEY
  qase-sync links adopt -c FILE --route R (--jql QUERY | --label LABEL) [--match REGEXP]
                                                stamp the marker on existing issues and link them
  qase-sync deadletters list|show ID|retry ID|drop ID -c FILE [--output text|json]
  qase-sync explain     ISSUE-KEY | PROJECT/KIND/ID -c FILE
                                                why an issue says what it says: changes, requests, rules, events
  qase-sync prune       -c FILE [--output text|json]
                                                forget history older than retention.max_age now
  qase-sync version

Every command takes -c/--config (default: $QASE_SYNC_CONFIG, else config.yaml);
'qase-sync COMMAND --help' describes a command.
`

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch cmd, rest := args[0], args[1:]; cmd {
	case "serve":
		err = cmdServe(ctx, rest, stdout, stderr)
	case "validate":
		err = cmdValidate(rest, stdout, stderr)
	case "plan":
		err = cmdPlan(ctx, rest, stdout, stderr)
	case "reconcile":
		err = cmdReconcile(ctx, rest, stdout, stderr)
	case "links":
		err = cmdLinks(ctx, rest, stdout, stderr)
	case "explain":
		err = cmdExplain(ctx, rest, stdout, stderr)
	case "deadletters", "dead-letters":
		err = cmdDeadLetters(ctx, rest, stdout, stderr)
	case "prune":
		err = cmdPrune(ctx, rest, stdout, stderr)
	case "version", "--version", "-v":
		fmt.Fprintln(stdout, "qase-sync", version)
	case "help", "-h", "--help":
		if len(rest) > 0 && commandDocs[rest[0]] != "" {
			fmt.Fprintln(stdout, commandDocs[rest[0]])
			break
		}
		fmt.Fprint(stdout, usage)
	default:
		fmt.Fprintf(stderr, "qase-sync: unknown command %q\n\n%s", cmd, usage)
		return 2
	}
	var help *helpRequest
	switch {
	case err == nil:
		return 0
	case errors.As(err, &help):
		fmt.Fprint(stdout, help.text)
		return 0
	case errors.Is(err, errInvalid):
		return 1 // already reported on stdout
	case errors.Is(err, errUsage), errors.Is(err, flag.ErrHelp):
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(stderr, "qase-sync:", err)
		}
		return 2
	default:
		fmt.Fprintln(stderr, "qase-sync:", err)
		return 1
	}
}

// commonFlags are shared by every subcommand.
type commonFlags struct {
	config string
	output string
}

func newFlagSet(name string, stderr io.Writer, c *commonFlags) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	// parseFlags reports errors (with a pointer to --help) and help itself.
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	def := os.Getenv("QASE_SYNC_CONFIG")
	if def == "" {
		def = "config.yaml"
	}
	fs.StringVar(&c.config, "c", def, "configuration file")
	fs.StringVar(&c.config, "config", def, "configuration file")
	fs.StringVar(&c.output, "output", "text", "output format: text or json")
	fs.StringVar(&c.output, "o", "text", "output format: text or json")
	return fs
}

// multiFlag collects a repeatable string flag.
type multiFlag []string

func (m *multiFlag) String() string     { return fmt.Sprint(*m) }
func (m *multiFlag) Set(s string) error { *m = append(*m, s); return nil }

// parseFlags parses args allowing flags after positional arguments
// ("deadletters show 3 -c x.yaml").
// commonArgs parses the arguments of a command that has only the common
// flags, and returns those flags and the positional arguments.
func commonArgs(name string, args []string, stderr io.Writer) (commonFlags, []string, error) {
	var c commonFlags
	pos, err := parseFlags(newFlagSet(name, stderr, &c), args)
	return c, pos, err
}

func parseFlags(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, &helpRequest{text: commandHelp(fs)}
			}
			return nil, fmt.Errorf("%w: %v (run 'qase-sync %s --help')", errUsage, err, fs.Name())
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// helpRequest is an explicit -h/--help: the command's help goes to stdout
// and the exit status is 0.
type helpRequest struct{ text string }

func (h *helpRequest) Error() string { return "help requested" }

// commandDocs describe each command for its --help.
var commandDocs = map[string]string{
	"serve": `Usage: qase-sync serve -c FILE

Run the service: the Qase webhook receiver (server.listen, server.webhook_path),
the workers that converge tracker issues, the scheduled reconciler, /healthz,
/readyz, /metrics and, with server.admin_token, the admin API and status page
under /admin/. SIGINT/SIGTERM shut it down gracefully.
Environment: QASE_SYNC_CONFIG (default config file), and whatever the
configuration expands, e.g. ${QASE_SYNC_LISTEN:-:8080} in config.example.yaml.`,
	"validate": `Usage: qase-sync validate -c FILE [-o text|json]

Check the configuration and mapping tables without starting anything. Every
problem is reported with file, line and field; exit status 1 if there is any.`,
	"plan": `Usage: qase-sync plan -c FILE --event FILE [--project CODE] [-o text|json]
       qase-sync plan -c FILE --run FILE [-o text|json]

Show what one Qase webhook body would do, sending nothing: whether the webhook
would ignore it, which routes take it, the desired issue, and the exact
tracker requests (the real adapters over a recording transport; no secret is
printed). Bodies without project_code (older Qase webhooks, delivered to
/webhooks/qase/CODE) need --project CODE.

--run FILE plans a recorded run for the failure routes: the run and its
results as the Qase API returns them ({"project", "run", "results",
"cases"}; see testdata/qase/runs). Each signature's operations are shown as
if nothing had been filed before.`,
	"reconcile": `Usage: qase-sync reconcile -c FILE [--route R]... [--dry-run] [--incremental] [-o text|json]

Run one reconcile pass now: enumerate entities (Qase API lists and stored
links), compare each tracker issue with what the mapping wants, and repair
drift and duplicates; only keys that differ get a job. --dry-run shows the
drift per key and changes nothing. --incremental reads only the Qase defects
changed since the last pass (a full sweep if none ran within
reconcile.full_every).`,
	"links": `Usage: qase-sync links rebuild -c FILE [--route R]...

Restore the correlation links in the store from the markers inside the
tracker issues (after losing or replacing the database).`,
	"explain": `Usage: qase-sync explain ISSUE-KEY | PROJECT/KIND/ID -c FILE [-o text|json]

Show the provenance of a tracker issue or a Qase entity, newest first: each
tracker change, the request that made it, the route and rule behind it, and
the Qase events that caused it.`,
	"prune": `Usage: qase-sync prune -c FILE [-o text|json]

Prune the store's history now, as serve does every retention.interval: events
older than retention.max_age that their entity's snapshot has folded and that
have no pending delivery (the newest of each project stays), ledger entries,
dead letters whose key has no job, and recorded reconcile passes.`,
	"deadletters": `Usage: qase-sync deadletters list|show ID|retry ID|drop ID -c FILE [-o text|json]

Inspect and act on jobs that failed permanently or exhausted their retries:
list them, show one (reason and the failed request, without secrets), requeue
it for the running service (retry) or discard it (drop).`,
}

func commandHelp(fs *flag.FlagSet) string {
	var b strings.Builder
	doc := commandDocs[fs.Name()]
	if doc == "" {
		doc = "Usage: qase-sync " + fs.Name()
	}
	b.WriteString(doc)
	b.WriteString("\n\nFlags:\n")
	out := fs.Output()
	fs.SetOutput(&b)
	fs.PrintDefaults()
	fs.SetOutput(out)
	return b.String()
}
