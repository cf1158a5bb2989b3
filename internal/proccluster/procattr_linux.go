package proccluster

import "syscall"

// SysProcAttr puts a child in its own process group, so that Ctrl-C in a terminal
// reaches only its parent (which stops the children itself), and has the kernel kill
// it if the parent dies. Start sets it; it is exported for the tests that run the
// binary with os/exec directly.
func SysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
