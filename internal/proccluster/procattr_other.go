//go:build !linux

package proccluster

import "syscall"

// SysProcAttr: elsewhere the children watch their standard input instead (see
// agent --exit-with-parent).
func SysProcAttr() *syscall.SysProcAttr { return nil }
