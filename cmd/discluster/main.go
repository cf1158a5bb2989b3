// Command discluster runs the Discord gateway connections of a large bot across many
// machines: agent runs a node, status shows the cluster, drain moves shards off a
// node, and fake-discord serves a protocol-faithful fake Discord for tests.
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/urfave/cli/v2"
)

func main() {
	app := newApp(os.Stdout, os.Stderr)
	if err := app.RunContext(context.Background(), flagsFirst(app, os.Args)); err != nil {
		fmt.Fprintln(os.Stderr, "discluster:", err)
		os.Exit(1)
	}
}

func newApp(stdout, stderr io.Writer) *cli.App {
	return &cli.App{
		Name:      "discluster",
		Usage:     "run a Discord bot's gateway shards across many machines, with no master",
		Writer:    stdout,
		ErrWriter: stderr,
		Commands: []*cli.Command{
			demoCommand(),
			agentCommand(),
			statusCommand(),
			drainCommand(),
			reshardCommand(),
			sendCommand(),
			keygenCommand(),
			keyringCommand(),
			tlsCommand(),
			benchCommand(),
			fakeDiscordCommand(),
		},
	}
}

// flagsFirst moves a subcommand's flags in front of its arguments, so that
// `discluster drain node-2 --addr HOST:PORT` means what it says: the CLI library
// stops reading flags at the first argument, and a flag after it would be taken for
// a second node name. A "--" ends the flags, as usual.
func flagsFirst(app *cli.App, args []string) []string {
	if len(args) < 2 {
		return args
	}
	cmd := app.Command(args[1])
	if cmd == nil {
		return args
	}
	at := 2 // where the command's own arguments start, below its subcommands
	for at < len(args) && len(cmd.Subcommands) > 0 {
		sub := cmd.Command(args[at])
		if sub == nil {
			break
		}
		cmd, at = sub, at+1
	}
	takesValue := map[string]bool{}
	for _, f := range cmd.Flags {
		_, isBool := f.(*cli.BoolFlag)
		for _, name := range f.Names() {
			takesValue[name] = !isBool
		}
	}
	var flags, rest []string
	for i := at; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			rest = append(rest, args[i:]...)
			i = len(args)
		case len(a) > 1 && a[0] == '-':
			flags = append(flags, a)
			name := strings.TrimLeft(a, "-")
			if !strings.Contains(name, "=") && takesValue[name] && i+1 < len(args) {
				i++
				flags = append(flags, args[i])
			}
		default:
			rest = append(rest, a)
		}
	}
	return append(append(append([]string(nil), args[:at]...), flags...), rest...)
}

// signalContext ends when the process is asked to stop (Ctrl-C or SIGTERM).
func signalContext(parent context.Context) (context.Context, context.CancelFunc) {
	return signal.NotifyContext(parent, os.Interrupt, syscall.SIGTERM)
}

func newLogger(w io.Writer, level slog.Level) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}
