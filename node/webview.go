package node

import (
	"net"
	"net/url"
	"slices"

	"github.com/discluster/discluster/node/api"
	"github.com/discluster/discluster/node/api/ui"
)

// webView is the API's option that serves the web view, whose page may call the
// other members' APIs when this agent goes away.
func (n *Node) webView() api.Option {
	return api.WithUI(ui.Handler(n.apiOrigins), n.allowOrigin)
}

// apiOrigins are the web origins of the members' APIs (this node's included), as a
// browser names them: the scheme this cluster's APIs speak and the advertised
// address. A loopback address is also named as localhost.
func (n *Node) apiOrigins() []string {
	scheme := "http://"
	if n.cfg.HTTPTLS {
		scheme = "https://"
	}
	addrs := []string{n.advertiseHTTP}
	for _, m := range n.fsm.Members() {
		addrs = append(addrs, m.HTTPAddr)
	}
	var out []string
	for _, a := range addrs {
		host, port, err := net.SplitHostPort(a)
		if err != nil {
			continue
		}
		out = append(out, scheme+a)
		if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
			out = append(out, scheme+net.JoinHostPort("localhost", port))
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// allowOrigin reports whether a page of origin (a web view served by a member) may
// call this API from a browser.
func (n *Node) allowOrigin(origin string) bool {
	u, err := url.Parse(origin)
	if err != nil || u.Path != "" || u.Host == "" {
		return false
	}
	return slices.Contains(n.apiOrigins(), u.Scheme+"://"+u.Host)
}
