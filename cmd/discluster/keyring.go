package main

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"github.com/discluster/discluster/node"
)

func keygenCommand() *cli.Command {
	return &cli.Command{
		Name:  "keygen",
		Usage: "print a new gossip key (for --encrypt and discluster keyring)",
		Action: func(c *cli.Context) error {
			if c.Args().Present() {
				return fmt.Errorf("keygen takes no arguments, got %q", c.Args().Slice())
			}
			fmt.Fprintln(c.App.Writer, node.NewGossipKey())
			return nil
		},
	}
}

func keyringCommand() *cli.Command {
	return &cli.Command{
		Name:  "keyring",
		Usage: "list, install, use or remove gossip keys on every member: rotate with --install NEW, --use NEW, --remove OLD",
		Flags: []cli.Flag{addrFlag, httpTokenFileFlag, clientTLSFlag, clientCAFlag,
			&cli.StringFlag{Name: "install", Usage: "add this key to every member's keyring"},
			&cli.StringFlag{Name: "use", Usage: "make this installed key every member's primary (what they encrypt with)"},
			&cli.StringFlag{Name: "remove", Usage: "remove this key from every member (not the primary)"},
		},
		Action: func(c *cli.Context) error {
			if c.Args().Present() {
				return fmt.Errorf("keyring takes no arguments, got %q", c.Args().Slice())
			}
			op, key := "list", ""
			for _, o := range []string{"install", "use", "remove"} {
				if v := c.String(o); v != "" {
					if op != "list" {
						return errors.New("one of --install, --use and --remove at a time")
					}
					if _, err := node.ParseGossipKey(v); err != nil {
						return fmt.Errorf("--%s: %w", o, err)
					}
					op, key = o, v
				}
			}
			cl, err := client(c)
			if err != nil {
				return err
			}
			k, err := cl.Keyring(c.Context, op, key)
			if err != nil {
				return err
			}
			w := c.App.Writer
			if op != "list" {
				fmt.Fprintf(w, "%s: done on %d of %d members\n", op, k.Responded-len(k.Failed), k.Nodes)
			}
			for node, why := range k.Failed {
				fmt.Fprintf(w, "  %s: %s\n", node, why)
			}
			tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "KEY\tMEMBERS\tPRIMARY ON")
			keys := make([]string, 0, len(k.Keys))
			for key := range k.Keys {
				keys = append(keys, key)
			}
			slices.Sort(keys)
			for _, key := range keys {
				fmt.Fprintf(tw, "%s\t%d/%d\t%d\n", key, k.Keys[key], k.Nodes, k.Primary[key])
			}
			tw.Flush()
			if len(k.Failed) > 0 {
				return fmt.Errorf("%d members did not take the change: %s", len(k.Failed), strings.Join(slices.Sorted(maps.Keys(k.Failed)), ", "))
			}
			return nil
		},
	}
}
