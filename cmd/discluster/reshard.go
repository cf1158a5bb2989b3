package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/discluster/discluster/node/api"
	"github.com/discluster/discluster/node/event"
)

func reshardCommand() *cli.Command {
	return &cli.Command{
		Name:  "reshard",
		Usage: "change the shard count without downtime: a new generation identifies beside the current one, then one switch (--cancel: drop it)",
		Description: `The leader places the new generation's shards over the nodes, they IDENTIFY under the
cluster's identify gate while the current generation keeps delivering, and once every
one of them is READY with its guilds, one replicated command switches delivery to it and
the old sessions close. Refused, with the numbers, while a reshard runs, for the count
the cluster runs, or when the session start budget cannot cover one IDENTIFY per new
shard on top of its reserve.`,
		Flags: []cli.Flag{addrFlag, httpTokenFileFlag, clientTLSFlag, clientCAFlag,
			&cli.StringFlag{Name: "shards", Usage: `the new shard count, or "auto" for Discord's recommendation (GET /gateway/bot)`},
			&cli.BoolFlag{Name: "cancel", Usage: "drop the reshard that runs: its sessions close, the current generation goes on"},
			&cli.BoolFlag{Name: "wait", Usage: "print progress until the switch (exit 1 if the reshard is cancelled instead)"},
		},
		Action: func(c *cli.Context) error {
			if c.Args().Present() {
				return fmt.Errorf("reshard takes no arguments, got %q", c.Args().Slice())
			}
			shards, cancel := c.String("shards"), c.Bool("cancel")
			var req api.ReshardRequest
			switch {
			case cancel && shards != "":
				return errors.New("reshard takes --shards N or --cancel, not both")
			case cancel && c.Bool("wait"):
				return errors.New("--wait follows a reshard to its switch: a cancel has none")
			case cancel:
			case shards == "auto":
				req.Auto = true
			case shards == "":
				return errors.New(`reshard needs --shards N (or --shards auto), or --cancel`)
			default:
				n, err := strconv.Atoi(shards)
				if err != nil || n < 1 {
					return fmt.Errorf(`--shards %q: a shard count from 1, or "auto"`, shards)
				}
				req.Shards = n
			}
			cl, err := client(c)
			if err != nil {
				return err
			}
			w := c.App.Writer
			if cancel {
				r, err := cl.CancelReshard(c.Context)
				if err != nil {
					return err
				}
				fmt.Fprintf(w, "cancelled the reshard to %d shards (generation %d): its sessions close; the cluster goes on with %d\n", r.To, r.Generation, r.From)
				return nil
			}
			r, err := cl.Reshard(c.Context, req)
			if err != nil {
				return err
			}
			fmt.Fprintf(w, "resharding from %d to %d shards (generation %d): the new shards identify beside the current ones, at least %v by the identify schedule; `discluster status` shows the progress\n",
				r.From, r.To, r.Generation, r.ETA)
			if !c.Bool("wait") {
				return nil
			}
			ctx, stop := signalContext(c.Context)
			defer stop()
			return waitReshard(ctx, w, cl, r, time.Second)
		},
	}
}

// waitReshard follows reshard r through the status until its switch, printing its
// progress when it moves; an error once it was cancelled instead. An agent that does
// not answer for a while is asked again (a leader change, a node restarting).
func waitReshard(ctx context.Context, w io.Writer, cl *api.Client, r api.Reshard, every time.Duration) error {
	tick := time.NewTicker(every)
	defer tick.Stop()
	var last, lastErr string
	start := time.Now()
	for {
		st, err := cl.Status(ctx)
		switch {
		case err != nil:
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if err.Error() != lastErr {
				fmt.Fprintf(w, "cannot read the status (asking again): %v\n", err)
				lastErr = err.Error()
			}
		case st.Reshard != nil && st.Reshard.Generation == r.Generation:
			p := st.Reshard
			line := fmt.Sprintf("%d/%d shards warm, %d/%d assigned, ETA %v", p.Warm, p.To, p.Assigned, p.To, p.ETA)
			if line != last {
				fmt.Fprintf(w, "%s  %s\n", time.Now().Format(time.TimeOnly), line)
				last = line
			}
		case st.Config != nil && st.Config.Generation >= r.Generation:
			return reshardSwitched(w, st, r)
		case cancelledEvent(st, r) != nil:
			return fmt.Errorf("the reshard to %d shards was cancelled (%s)", r.To, cancelledEvent(st, r).Cause)
		case last != "":
			// It ran, and is gone without a switch: cancelled, its event out of sight.
			return fmt.Errorf("the reshard to %d shards no longer runs and the cluster runs generation %d: cancelled", r.To, st.Config.Generation)
		case time.Since(start) > 30*time.Second:
			return fmt.Errorf("the reshard to %d shards (generation %d) does not show in the status of %s", r.To, r.Generation, cl.Addr)
		}
		// Otherwise the answering agent has not applied the start yet.
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// reshardSwitched says the reshard switched, with the time it took when its event
// is among the recent ones.
func reshardSwitched(w io.Writer, st api.Status, r api.Reshard) error {
	for _, e := range st.Events {
		if e.Kind == event.ReshardSwitched && e.Gen == r.Generation {
			fmt.Fprintf(w, "switched: %d shards deliver, %v after the start\n", r.To, e.Duration)
			return nil
		}
	}
	fmt.Fprintf(w, "switched: %d shards deliver\n", r.To)
	return nil
}

// cancelledEvent is the recent event of r's cancel, nil when there is none.
func cancelledEvent(st api.Status, r api.Reshard) *event.Event {
	for i, e := range st.Events {
		if e.Kind == event.ReshardCancelled && e.Gen == r.Generation {
			return &st.Events[i]
		}
	}
	return nil
}
