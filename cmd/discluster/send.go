package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/urfave/cli/v2"

	"github.com/discluster/discluster/node/api"
)

func sendCommand() *cli.Command {
	return &cli.Command{
		Name:  "send",
		Usage: "send a gateway command (presence, voice state, member request, ...) on a shard's connection, through any agent",
		Description: `PAYLOAD is the gateway payload, {"op": 3, "d": {...}}; the agent forwards it to the
shard's owner, which writes it within the connection's send limit. Ops 3, 4, 8, 31
and 43 only: heartbeats, IDENTIFY and RESUME are the shard's own.`,
		ArgsUsage: "PAYLOAD",
		Flags: []cli.Flag{addrFlag, httpTokenFileFlag, clientTLSFlag, clientCAFlag,
			&cli.StringFlag{Name: "shard", Usage: "the shard id"},
			&cli.StringFlag{Name: "guild", Usage: "a guild id: its shard, (guild_id >> 22) % shards"}},
		Action: func(c *cli.Context) error {
			if c.Args().Len() != 1 {
				return fmt.Errorf(`send takes one payload, {"op": 3, "d": {...}}, got %d arguments`, c.Args().Len())
			}
			var t api.Target
			switch shard, guild := c.String("shard"), c.String("guild"); {
			case (shard == "") == (guild == ""):
				return errors.New("send needs --shard N or --guild ID, one of them")
			case shard != "":
				id, err := strconv.Atoi(shard)
				if err != nil || id < 0 {
					return fmt.Errorf("--shard %q: a shard id, from 0", shard)
				}
				t.Shard = id
			default:
				g, err := strconv.ParseUint(guild, 10, 64)
				if err != nil {
					return fmt.Errorf("--guild %q: a guild id (a snowflake)", guild)
				}
				t.Guild, t.ByGuild = g, true
			}
			var cmd api.Command
			if err := json.Unmarshal([]byte(c.Args().First()), &cmd); err != nil {
				return fmt.Errorf(`the payload must be JSON, {"op": 3, "d": {...}}: %w`, err)
			}
			if err := cmd.Check(); err != nil {
				return err
			}
			cl, err := client(c)
			if err != nil {
				return err
			}
			sent, err := cl.Send(c.Context, t, cmd)
			if err != nil {
				return err
			}
			fmt.Fprintf(c.App.Writer, "sent op %d on shard %d by %s\n", cmd.Op, sent.Shard, sent.Node)
			return nil
		},
	}
}
