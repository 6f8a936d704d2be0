package faultsuite

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The Vault scenarios share one shape: encrypt (plaintext topic → topicEnc) and consume
// (topicPre, encrypted by the harness) run against the same Vault; once both have
// handled part of a first stream, Vault fails and a second stream arrives that needs it;
// the fault lasts a while and ends; both must go on by themselves and deliver every
// message, having acknowledged nothing while they could not protect or decrypt.

const (
	part1     = 600 // messages before the fault
	part2     = 600 // messages that arrive during it
	faultFrom = 300 // the fault begins once each side has handled this many
)

// vaultFault describes one Vault scenario.
type vaultFault struct {
	ids   [3]string // table rows: encrypt, consume, encrypt --max-outage
	title string
	mode  mode
	opts  rigOptions
	args  []string // extra flags for both commands
	// inject begins the fault, heal ends it; lasting is how long the fault lasts at least
	// (counted from inject). Without heal the fault lasts to the end (a slow Vault).
	inject, heal func(r *rig)
	lasting      time.Duration
	// held says which sides must hold (log an outage, acknowledge nothing) while the
	// fault lasts; a side that is not held must deliver through it.
	encHeld, consHeld bool
	// maxOutage, if set, runs a second bridge with --max-outage that must exit with
	// status 3 during the fault; it is started again after the fault and must deliver.
	maxOutage time.Duration
	encNote   string // what the note says of an encrypt that is not held
	// throughout: the fault lasts until every message was delivered through it (a slow
	// Vault), and the note says how long the second stream took.
	throughout bool
}

// side is one command of a scenario while the fault lasts.
type side struct {
	p               *proc
	group, topic    string
	errFrom         int           // stderr length when the fault began
	handledAtFault  int           // messages handled when the fault began
	heldN           int           // handled once it was seen holding
	acked           int           // handled while held (want 0)
	outageAfter     time.Duration // from the fault to the outage's log line
	outageLogs      int           // outage lines logged from the fault on
	handledInOutage int           // for a side that is not held: handled during the fault
}

func (s *side) handled() int {
	if s.p.stdoutIsOutput {
		return s.p.consumedN()
	}
	return s.p.forwardedN()
}

func runVaultFault(t *testing.T, vf vaultFault) {
	r := newRig(t, vf.opts)
	env := r.env(r.vault.Token)
	r.producePlain(part1)
	pre1, pre2 := r.encryptForConsume(vf.mode, part1), r.encryptForConsume(vf.mode, part2)
	r.produce(pre1)

	enc := &side{p: r.encrypt("encrypt", env, vf.mode, vf.args...), group: groupEnc, topic: topicPlain}
	cons := &side{p: r.consume("consume", env, topicPre, vf.args...), group: groupCons, topic: topicPre}
	var bounded *proc
	if vf.maxOutage > 0 {
		bounded = r.encryptTo("encrypt --max-outage", env, vf.mode, groupEnc2, topicEnc2, append(vf.args, "--max-outage", vf.maxOutage.String())...)
	}
	waitFor(t, fmt.Sprintf("%d handled on each side", faultFrom), waitLong, func() bool {
		return enc.handled() >= faultFrom && cons.handled() >= faultFrom && (bounded == nil || bounded.forwardedN() >= faultFrom)
	}, enc.p, cons.p)

	for _, s := range []*side{enc, cons} {
		s.errFrom = s.p.stderr.Len()
	}
	boundedErr := 0
	if bounded != nil {
		boundedErr = bounded.stderr.Len()
	}
	began := time.Now()
	vf.inject(r)
	r.producePlain(part2)
	r.produce(pre2)
	for _, s := range []*side{enc, cons} {
		s.handledAtFault = s.handled()
	}

	// A held side logs the outage with its class and then acknowledges nothing.
	held := map[*side]bool{enc: vf.encHeld, cons: vf.consHeld}
	for _, s := range []*side{enc, cons} {
		if !held[s] {
			continue
		}
		waitFor(t, s.p.name+" logging the outage", time.Minute, func() bool { return s.p.outageNamed(s.errFrom) }, s.p)
		s.outageAfter = time.Since(began)
		s.heldN = s.handled()
	}
	if d := vf.lasting - time.Since(began); d > 0 {
		time.Sleep(d) // the fault's own length: nothing to wait for, the outage is the test
	}
	for _, s := range []*side{enc, cons} {
		if !held[s] {
			s.handledInOutage = s.handled() - s.handledAtFault
			continue
		}
		s.acked = s.handled() - s.heldN
		if off := r.committed(s.group, s.topic); off > int64(s.handled()) {
			t.Errorf("%s: the group's offset is %d, past the %d messages it handled, while Vault failed", s.p.name, off, s.handled())
		}
		if s.acked != 0 {
			t.Errorf("%s acknowledged %d message(s) while it was holding for the outage", s.p.name, s.acked)
		}
	}
	var boundedExit, boundedAfter string
	if bounded != nil {
		code := bounded.wait(time.Minute + vf.maxOutage)
		msg := lastLine(bounded.stderr.String())
		boundedExit = fmt.Sprintf("exit %d after %.1f s", code, bounded.end.Sub(began).Seconds())
		if code != 3 {
			t.Errorf("encrypt --max-outage %v: %s, want exit 3: %s", vf.maxOutage, boundedExit, msg)
		}
		checkExitLine(t, bounded, "environment fault", "longer than --max-outage")
		if limit := maxOutageLimit(30*time.Second+vf.vaultTimeout(), vf.maxOutage); bounded.end.Sub(began) > limit {
			t.Errorf("encrypt --max-outage %v: %s, past its bound of %v", vf.maxOutage, boundedExit, limit)
		}
		if !bounded.outageNamed(boundedErr) {
			t.Errorf("encrypt --max-outage did not log the outage with its class\n%s", bounded.logs())
		}
		boundedAfter = msg
	}
	r.mu.Lock()
	nPlain, nPre := len(r.plain), len(r.pre)
	r.mu.Unlock()
	all := func() bool {
		return enc.p.forwardedDistinct() >= nPlain && distinct(idsOf(cons.p)) >= nPre
	}
	if vf.throughout {
		waitFor(t, "every message handled through the fault", waitLong, all, enc.p, cons.p)
	}
	healed := time.Now()
	if vf.heal != nil {
		vf.heal(r)
	}
	var rerun *proc
	if bounded != nil {
		rerun = r.encryptTo("encrypt --max-outage, run again", env, vf.mode, groupEnc2, topicEnc2, vf.args...)
	}

	waitFor(t, "every message handled on each side", waitLong, func() bool {
		// The rerun of the bounded bridge forwards what its first run did not.
		return all() && (bounded == nil || distinct(append(forwarded(bounded.stdout.String()), forwarded(rerun.stdout.String())...)) >= nPlain)
	}, enc.p, cons.p)
	recovered := time.Since(healed)
	through := healed.Sub(began)
	for _, s := range []*side{enc, cons} {
		s.outageLogs = len(s.p.outageLines(s.errFrom))
		s.p.stop(syscall.SIGINT)
	}
	if rerun != nil {
		rerun.stop(syscall.SIGINT)
	}

	leaked := r.checkLeaks()
	note := func(s *side) string {
		if vf.throughout {
			outages := "no outage logged"
			if s.outageLogs > 0 {
				outages = fmt.Sprintf("%d outage(s) logged", s.outageLogs)
			}
			return fmt.Sprintf("%s; the second %d messages of both sides through it in %.1f s", outages, part2, through.Seconds())
		}
		if !held[s] {
			return fmt.Sprintf("%s: %d forwarded during the fault", vf.encNote, s.handledInOutage)
		}
		return fmt.Sprintf("outage (class environment) logged %d× from %.1f s after the fault, %d acked while held, all in %.1f s after it ended",
			s.outageLogs, s.outageAfter.Seconds(), s.acked, recovered.Seconds())
	}
	ce := r.countEncrypted(topicEnc)
	record(t, result{id: vf.ids[0], scenario: vf.title + ": encrypt, " + string(vf.mode) + " mode", count: ce, leaked: leaked, bound: encBatch, note: note(enc)})
	cc := r.countConsumed(cons.p)
	record(t, result{id: vf.ids[1], scenario: vf.title + ": consume, " + string(vf.mode) + " mode", count: cc, leaked: leaked, bound: consBatch, note: note(cons)})
	if bounded != nil {
		cb := r.countEncrypted(topicEnc2)
		record(t, result{id: vf.ids[2], scenario: vf.title + ": encrypt --max-outage " + vf.maxOutage.String(), count: cb, leaked: leaked, bound: encBatch,
			note: fmt.Sprintf("%s: %q; run again after the fault, delivers the rest", boundedExit, shorten(boundedAfter, 160))})
	}
}

// vaultTimeout is the --vault-timeout the scenario gives, 10 s by default.
func (vf vaultFault) vaultTimeout() time.Duration {
	for i, a := range vf.args {
		if a == "--vault-timeout" && i+1 < len(vf.args) {
			if d, err := time.ParseDuration(vf.args[i+1]); err == nil {
				return d
			}
		}
	}
	return 10 * time.Second
}

func idsOf(p *proc) []string {
	ids, _ := consumed(p.stdout.String())
	return ids
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

func shorten(s string, n int) string {
	s = strings.ReplaceAll(s, "|", "\\|")
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// Scenario 1: Vault killed with SIGKILL mid-stream and restarted (file storage, unsealed
// by the harness). In body mode the bridge's data key is cached (reused up to 5 minutes),
// so it needs no Vault while the outage lasts; the consumer meets a new data key every 25
// messages and must hold.
func TestVaultKilled(t *testing.T) {
	t.Parallel()
	kill := func(r *rig) {
		if err := r.vault.Kill(); err != nil {
			r.t.Fatal(err)
		}
	}
	restart := func(r *rig) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := r.vault.Restart(ctx); err != nil {
			r.t.Fatal(err)
		}
	}
	for _, m := range []mode{fieldMode, bodyMode} {
		t.Run(string(m), func(t *testing.T) {
			t.Parallel()
			ids := [3]string{"1.1", "1.2"}
			if m == bodyMode {
				ids = [3]string{"1.3", "1.4"}
			}
			runVaultFault(t, vaultFault{
				ids: ids, title: "Vault SIGKILLed, restarted 3 s later", mode: m,
				opts: rigOptions{persistentVault: true}, inject: kill, heal: restart, lasting: 3 * time.Second,
				encHeld: m == fieldMode, consHeld: true, encNote: "data key cached, no Vault call",
			})
		})
	}
}

// Scenario 2: Vault unreachable (every connection reset for 4 s) and Vault slow (300 ms
// added each way to every exchange, which is more than a Vault across a continent).
func TestVaultUnreachable(t *testing.T) {
	t.Parallel()
	runVaultFault(t, vaultFault{
		ids: [3]string{"2.1", "2.2"}, title: "Vault unreachable (connections reset) for 4 s", mode: fieldMode,
		opts:   rigOptions{vaultProxy: true},
		inject: func(r *rig) { r.vproxy.Cut() }, heal: func(r *rig) { r.vproxy.Pass() }, lasting: 4 * time.Second,
		encHeld: true, consHeld: true,
	})
}

func TestVaultSlow(t *testing.T) {
	t.Parallel()
	runVaultFault(t, vaultFault{
		ids: [3]string{"2.3", "2.4"}, title: "Vault slow (+300 ms each way)", mode: fieldMode,
		opts:   rigOptions{vaultProxy: true},
		inject: func(r *rig) { r.vproxy.Delay(300 * time.Millisecond) }, heal: func(r *rig) { r.vproxy.Pass() },
		throughout: true,
	})
}

// Scenario 7, Vault: Vault accepts connections and never answers, mid-run. Each request
// gives up after --vault-timeout (3 s here); the commands name the outage's class and hold;
// a bridge with --max-outage 4s exits 3 and, run again once Vault answers, delivers the rest.
func TestVaultSilentMidRun(t *testing.T) {
	t.Parallel()
	runVaultFault(t, vaultFault{
		ids: [3]string{"7.9", "7.10", "7.11"}, title: "Vault silent mid-run (--vault-timeout 3s)", mode: fieldMode,
		opts: rigOptions{vaultProxy: true}, args: []string{"--vault-timeout", "3s"},
		inject: func(r *rig) { r.vproxy.Silent() }, heal: func(r *rig) { r.vproxy.Pass() }, lasting: 6 * time.Second,
		encHeld: true, consHeld: true, maxOutage: 4 * time.Second,
	})
}
