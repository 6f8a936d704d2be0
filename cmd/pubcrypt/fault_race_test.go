//go:build race

package main

// Under -race the CLI processes the fault tests start are built with the race detector
// too, so that a data race in the bridge or the consumer fails them (exit status 66).
func init() { cliBuildFlags = append(cliBuildFlags, "-race") }
