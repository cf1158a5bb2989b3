package gatewaytest

import (
	"encoding/binary"
	"io"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// stampArrivals asks the kernel to stamp every segment nc receives with the time it
// arrived, so that the identify window is judged by arrival, as Discord's edge does,
// rather than by when the fake's read goroutine got the CPU: on a machine running
// thousands of shards beside the fake, that can be 100 ms later.
func stampArrivals(nc net.Conn) syscall.RawConn {
	tc, ok := nc.(*net.TCPConn)
	if !ok {
		return nil
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_TIMESTAMPNS, 1)
	}); err != nil || serr != nil {
		return nil
	}
	return rc
}

// readStamped reads like net.Conn.Read (deadlines included) and returns the arrival
// time of the last segment read, in Unix nanoseconds, or 0 when the kernel gave none.
func readStamped(rc syscall.RawConn, p, oob []byte) (n int, stamp int64, err error) {
	var oobn int
	var rerr error
	if err := rc.Read(func(fd uintptr) bool {
		n, oobn, _, _, rerr = syscall.Recvmsg(int(fd), p, oob, 0)
		return rerr != syscall.EAGAIN
	}); err != nil {
		return 0, 0, err
	}
	if rerr != nil {
		return 0, 0, rerr
	}
	if n == 0 && len(p) > 0 {
		return 0, 0, io.EOF
	}
	msgs, _ := syscall.ParseSocketControlMessage(oob[:oobn])
	for _, m := range msgs {
		if m.Header.Level == syscall.SOL_SOCKET && m.Header.Type == syscall.SCM_TIMESTAMPNS && len(m.Data) >= 16 {
			sec := int64(binary.NativeEndian.Uint64(m.Data[0:8]))
			nsec := int64(binary.NativeEndian.Uint64(m.Data[8:16]))
			stamp = sec*1e9 + nsec
		}
	}
	return n, stamp, nil
}

// queued is how many bytes wait in the socket's receive queue, or -1 when unknown.
func queued(rc syscall.RawConn) int {
	n := -1
	if err := rc.Control(func(fd uintptr) {
		if v, err := unix.IoctlGetInt(int(fd), unix.SIOCINQ); err == nil {
			n = v
		}
	}); err != nil {
		return -1
	}
	return n
}

// peek reads what has arrived into p without taking it from the socket, waiting
// until something has (or the connection's read deadline passes); 0 at EOF.
func peek(rc syscall.RawConn, p []byte) (int, error) {
	var n int
	var rerr error
	if err := rc.Read(func(fd uintptr) bool {
		n, _, _, _, rerr = syscall.Recvmsg(int(fd), p, nil, syscall.MSG_PEEK)
		return rerr != syscall.EAGAIN
	}); err != nil {
		return 0, err
	}
	return n, rerr
}
