package transport

import (
	"log/slog"
	"net"
	"sync"
	"time"
)

// Limits bound the connections open on one port, in total and from one IP.
type Limits struct {
	Total, PerIP int
}

// Limiter counts a port's open connections against its Limits and says, at most once
// per limitLogPeriod, that it turned some away: a flood is refused at the door, and
// its log line is one.
type Limiter struct {
	port string // for the log: "cluster port", "http port", ...
	log  *slog.Logger

	mu          sync.Mutex
	lim         Limits
	open        int
	openByIP    map[string]int
	refused     int // since the last warning
	lastLimited time.Time
}

// NewLimiter bounds port's connections by lim.
func NewLimiter(port string, lim Limits, log *slog.Logger) *Limiter {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Limiter{port: port, log: log, lim: lim, openByIP: map[string]int{}}
}

// Admit counts a connection from addr, or refuses it; release gives its place back,
// once, however often it is called.
func (l *Limiter) Admit(addr net.Addr) (release func(), ok bool) {
	ip := addr.String()
	if host, _, err := net.SplitHostPort(ip); err == nil {
		ip = host
	}
	l.mu.Lock()
	if l.open >= l.lim.Total || l.openByIP[ip] >= l.lim.PerIP {
		l.refused++
		var refused, open, fromIP int
		logNow := time.Since(l.lastLimited) > limitLogPeriod
		if logNow {
			l.lastLimited = time.Now()
			refused, open, fromIP = l.refused, l.open, l.openByIP[ip]
			l.refused = 0
		}
		l.mu.Unlock()
		if logNow {
			l.log.Warn(l.port+": connection limit reached; closing new connections (logged once per 10s)",
				"from", ip, "refused", refused, "open", open, "open_from_ip", fromIP, "max", l.lim.Total, "max_per_ip", l.lim.PerIP)
		}
		return nil, false
	}
	l.open++
	l.openByIP[ip]++
	l.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			defer l.mu.Unlock()
			l.open--
			if l.openByIP[ip]--; l.openByIP[ip] <= 0 {
				delete(l.openByIP, ip)
			}
		})
	}, true
}

// Open is how many connections are counted now.
func (l *Limiter) Open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.open
}

// SetLimits changes the limits for the connections admitted from then on.
func (l *Limiter) SetLimits(lim Limits) {
	l.mu.Lock()
	l.lim = lim
	l.mu.Unlock()
}

// wrap admits conn, or closes it at once; the admitted conn gives its place back
// when it is closed.
func (l *Limiter) wrap(conn net.Conn) (net.Conn, bool) {
	release, ok := l.Admit(conn.RemoteAddr())
	if !ok {
		conn.Close()
		return nil, false
	}
	return &countedConn{Conn: conn, release: release}, true
}

// countedConn gives its place back under the limits when it is closed.
type countedConn struct {
	net.Conn
	release func()
}

func (c *countedConn) Close() error {
	err := c.Conn.Close()
	c.release()
	return err
}

// LimitListener is ln with its accepted connections bounded by l: one over the
// limits is closed as it is accepted, and Accept waits for the next.
func LimitListener(ln net.Listener, l *Limiter) net.Listener {
	return &limitedListener{Listener: ln, lim: l}
}

type limitedListener struct {
	net.Listener
	lim *Limiter
}

func (ll *limitedListener) Accept() (net.Conn, error) {
	for {
		c, err := ll.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if c, ok := ll.lim.wrap(c); ok {
			return c, nil
		}
	}
}
