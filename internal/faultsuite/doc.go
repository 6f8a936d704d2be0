// Package faultsuite is pubcrypt's fault suite: Go tests that make the environment fail
// under running commands — Vault killed, cut off, slowed down or silent, the token
// revoked or expired, the Kafka broker restarted or silent, the commands themselves
// killed with SIGKILL — and count, by message ID, what was sent, received, lost,
// duplicated and leaked.
//
// Every scenario runs against the real servers the project starts (a Vault server built
// from source, persistent where it is killed; kfake in process, with a data directory
// where it is restarted) and runs the pubcrypt CLI as child processes, the way an
// operator runs it. Faults on the wire come from internal/netfault proxies. A leak is a
// canary value of a message's protected plaintext, or a Vault token, found on the wire
// (every topic but the plaintext source, read raw), in a command's output (stdout and
// stderr, except consume's stdout, which is the decrypted output by design) or in a file
// on disk (the commands' home, temporary and working directories, the broker's stored
// encrypted topics, Vault's storage). Each detector is proved on a place that must hold
// the canaries — the plaintext topic, consume's output — so that a blind detector
// cannot report zero leaks.
//
// The package holds no code outside its tests. Run it with
//
//	go test ./internal/faultsuite/
//
// and regenerate the README's table of results from a run with
//
//	go test ./internal/faultsuite/ -v -update
package faultsuite
