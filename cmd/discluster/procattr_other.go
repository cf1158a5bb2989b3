//go:build !linux

package main

import "syscall"

// childAttr: elsewhere the children watch their standard input instead (see
// --exit-with-parent).
func childAttr() *syscall.SysProcAttr { return nil }
