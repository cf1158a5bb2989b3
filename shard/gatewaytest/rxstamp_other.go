//go:build !linux

package gatewaytest

import (
	"net"
	"syscall"
)

// stampArrivals has no kernel arrival stamps to offer here: arrivals are judged by
// the time the fake read them.
func stampArrivals(net.Conn) syscall.RawConn { return nil }

func readStamped(syscall.RawConn, []byte, []byte) (int, int64, error) {
	panic("gatewaytest: readStamped without stampArrivals")
}

func queued(syscall.RawConn) int {
	panic("gatewaytest: queued without stampArrivals")
}

func peek(syscall.RawConn, []byte) (int, error) {
	panic("gatewaytest: peek without stampArrivals")
}
