// Command qase-sync mirrors Qase events into Jira and GitHub issues.
//
//	qase-sync serve       -c config.yaml
//	qase-sync validate    -c config.yaml
//	qase-sync plan        -c config.yaml --event testdata/qase/defect.created.json
//	qase-sync reconcile   -c config.yaml [--route R] [--dry-run] [--output json]
//	qase-sync links rebuild -c config.yaml [--route R]
//	qase-sync deadletters list|show|retry|drop [ID] -c config.yaml
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
  qase-sync plan        -c FILE --event FILE    show the tracker operations an event would cause (sends nothing)
  qase-sync reconcile   -c FILE [--route R]... [--dry-run] [--output text|json]
  qase-sync links rebuild -c FILE [--route R]...  restore correlation links from the markers in the trackers
  qase-sync deadletters list|show ID|retry ID|drop ID -c FILE [--output text|json]
  qase-sync version

Every command takes -c/--config (default: $QASE_SYNC_CONFIG, else config.yaml).
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
	case "deadletters", "dead-letters":
		err = cmdDeadLetters(ctx, rest, stdout, stderr)
	case "version", "--version", "-v":
		fmt.Fprintln(stdout, "qase-sync", version)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
	default:
		fmt.Fprintf(stderr, "qase-sync: unknown command %q\n\n%s", cmd, usage)
		return 2
	}
	switch {
	case err == nil:
		return 0
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
	fs.SetOutput(stderr)
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
func parseFlags(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}
