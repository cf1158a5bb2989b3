package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/urfave/cli/v2"

	"github.com/discluster/discluster/internal/certs"
)

func tlsCommand() *cli.Command {
	dir := &cli.StringFlag{Name: "dir", Value: ".", Usage: "where the files go (and the CA is read from)"}
	return &cli.Command{
		Name:  "tls",
		Usage: "make the cluster port's certificates: a CA, then one certificate per node",
		Subcommands: []*cli.Command{
			{
				Name:  "ca",
				Usage: "make the cluster CA: discluster-ca.pem and discluster-ca-key.pem (keep the key off the nodes)",
				Flags: []cli.Flag{dir, &cli.IntFlag{Name: "years", Value: 5, Usage: "how long the CA is valid"}},
				Action: func(c *cli.Context) error {
					if c.Int("years") < 1 {
						return fmt.Errorf("--years %d: at least 1", c.Int("years"))
					}
					cert, key, err := certs.NewCA(c.Int("years"))
					if err != nil {
						return err
					}
					return writeNew(c, c.String("dir"), "discluster-ca", cert, key)
				},
			},
			{
				Name:      "cert",
				Usage:     "make NAME.pem and NAME-key.pem for node NAME, issued by the CA in --dir",
				ArgsUsage: "NAME",
				Flags: []cli.Flag{dir, &cli.StringSliceFlag{Name: "ip", Usage: "an address the node is reached at (repeatable; informative: peers check the CA and the role)"},
					&cli.IntFlag{Name: "days", Value: 365, Usage: "how long the certificate is valid"}},
				Action: func(c *cli.Context) error {
					if c.Args().Len() != 1 {
						return fmt.Errorf("tls cert takes one node name, got %q", c.Args().Slice())
					}
					if c.Int("days") < 1 {
						return fmt.Errorf("--days %d: at least 1", c.Int("days"))
					}
					var ips []net.IP
					for _, s := range c.StringSlice("ip") {
						ip := net.ParseIP(s)
						if ip == nil {
							return fmt.Errorf("--ip %q is not an IP address", s)
						}
						ips = append(ips, ip)
					}
					d := c.String("dir")
					caCert, err := os.ReadFile(filepath.Join(d, "discluster-ca.pem"))
					if err != nil {
						return fmt.Errorf("the CA (make it with discluster tls ca --dir %s): %w", d, err)
					}
					caKey, err := os.ReadFile(filepath.Join(d, "discluster-ca-key.pem"))
					if err != nil {
						return fmt.Errorf("the CA's key: %w", err)
					}
					cert, key, err := certs.NewNodeCert(caCert, caKey, c.Args().First(), ips, c.Int("days"))
					if err != nil {
						return err
					}
					return writeNew(c, d, c.Args().First(), cert, key)
				},
			},
		},
	}
}

// writeNew writes NAME.pem and NAME-key.pem (mode 0600), refusing to overwrite.
func writeNew(c *cli.Context, dir, name string, cert, key []byte) error {
	certPath, keyPath := filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
	for _, p := range []string{certPath, keyPath} {
		if _, err := os.Stat(p); err == nil {
			return fmt.Errorf("%s exists: move it away first (nothing was written)", p)
		} else if !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	if err := os.WriteFile(certPath, cert, 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(keyPath, key, 0o600); err != nil {
		return err
	}
	fmt.Fprintf(c.App.Writer, "wrote %s and %s\n", certPath, keyPath)
	return nil
}
