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
	"syscall"

	"github.com/urfave/cli/v2"
)

func main() {
	if err := newApp(os.Stdout, os.Stderr).Run(os.Args); err != nil {
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
			benchCommand(),
			fakeDiscordCommand(),
		},
	}
}

// signalContext ends when the process is asked to stop (Ctrl-C or SIGTERM).
func signalContext(parent context.Context) (context.Context, context.CancelFunc) {
	return signal.NotifyContext(parent, os.Interrupt, syscall.SIGTERM)
}

func newLogger(w io.Writer, level slog.Level) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}
