package main

import "syscall"

// childAttr puts a child in its own process group, so that Ctrl-C in the terminal
// reaches only the demo (which stops the children itself), and has the kernel kill it
// if the demo dies.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
