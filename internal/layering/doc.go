// Package layering holds the import-rules test of the module: which package may
// import which, in the shape of tailscale's deptest. It has no code of its own; a new
// package gets a rule there, or the test fails.
package layering
