package faultsuite

import (
	"fmt"
	"syscall"
	"testing"
	"time"
)

// Scenario 7: a broker and a Vault that accept connections and never answer (a hung
// process, a black-holing middlebox), at start and in the middle of a run.

// silentStartLimit is the margin over the 30 s default --broker-timeout within which a
// command must have failed at start: only a hang fails it, not a loaded machine.
const silentStartLimit = 45 * time.Second

// TestSilentAtStart: encrypt and consume started against a silent broker, or a silent
// Vault, at defaults. A silent broker: both fail within --broker-timeout (30 s) with exit
// status 3 and an error that says the broker did not answer; nothing is committed. A
// silent Vault: encrypt's start check (a data key) fails within --vault-timeout (10 s)
// with status 3; consume has nothing to check before its first message and rides the
// outage out, logged with its class. Once the server answers, a rerun (and the consume
// that waited) deliver every message.
func TestSilentAtStart(t *testing.T) {
	t.Parallel()
	t.Run("kafka", func(t *testing.T) {
		t.Parallel()
		r := newRig(t, rigOptions{kafkaProxy: true})
		runSilentAtStart(t, r, [2]string{"7.1", "7.2"}, "Kafka silent at start (defaults)",
			func() { r.kafka.Proxy().Silent() }, func() { r.kafka.Proxy().Pass() }, true, "no answer from the broker within 30s")
	})
	t.Run("vault", func(t *testing.T) {
		t.Parallel()
		r := newRig(t, rigOptions{vaultProxy: true})
		runSilentAtStart(t, r, [2]string{"7.3", "7.4"}, "Vault silent at start (defaults)",
			func() { r.vproxy.Silent() }, func() { r.vproxy.Pass() }, false, "key service unavailable")
	})
}

func runSilentAtStart(t *testing.T, r *rig, ids [2]string, title string, silence, answer func(), brokerSilent bool, want string) {
	const n = 200
	env := r.env(r.vault.Token)
	r.producePlain(n)
	r.produce(r.encryptForConsume(fieldMode, n))
	silence()
	began := time.Now()
	enc := r.encrypt("encrypt", env, fieldMode)
	cons := r.consume("consume", env, topicPre)

	notes := map[*proc]string{}
	var reruns []*proc
	for _, p := range []*proc{enc, cons} {
		// Either the command fails at start, or (consume facing a silent Vault: nothing to
		// check before the first message) it holds with the outage logged.
		waitFor(t, p.name+" failing or holding", 2*time.Minute, func() bool { return !p.running() || p.outageNamed(0) })
		took := time.Since(began)
		if p.running() {
			notes[p] = fmt.Sprintf("holds: outage logged with class environment %.1f s after start, nothing printed; went on by itself once the server answered", took.Seconds())
			if n := p.consumedN() + p.forwardedN(); n > 0 {
				t.Errorf("%s handled %d messages with the server silent", p.name, n)
			}
			continue
		}
		msg := lastLine(p.stderr.String())
		took = p.end.Sub(began)
		notes[p] = fmt.Sprintf("exit %d after %.1f s: %q; a rerun delivered every message", p.code(), took.Seconds(), shorten(msg, 150))
		switch {
		case p.code() != 3:
			t.Errorf("%s: exit %d, want 3 (environment)\n%s", p.name, p.code(), p.logs())
		case took > silentStartLimit:
			t.Errorf("%s: failed after %v, want within the 30 s bound", p.name, took)
		}
		checkExitLine(t, p, "environment fault", want)
		reruns = append(reruns, p)
	}
	// Nothing committed while the server was silent. With the broker reachable (Vault
	// silent) every group is read before the server answers; with the broker silent the
	// offsets can only be read once it answers, and then only for the commands that exited:
	// one that held may go on, and commit, the moment the broker is back.
	groups := []struct {
		p            *proc
		group, topic string
	}{{enc, groupEnc, topicPlain}, {cons, groupCons, topicPre}}
	checkCommitted := func(exitedOnly bool) {
		for _, g := range groups {
			if exitedOnly && g.p.running() {
				continue
			}
			if off := r.committed(g.group, g.topic); off > 0 {
				t.Errorf("group %s committed offset %d with the server silent", g.group, off)
			}
		}
	}
	if !brokerSilent {
		checkCommitted(false)
	}
	answer()
	if brokerSilent {
		checkCommitted(true)
	}
	procs := map[*proc]*proc{enc: enc, cons: cons} // the process that delivers for each
	for _, p := range reruns {
		if p == enc {
			procs[enc] = r.encrypt("encrypt, run again", env, fieldMode)
		} else {
			procs[cons] = r.consume("consume, run again", env, topicPre)
		}
	}
	waitFor(t, "every message handled", waitLong, func() bool {
		return procs[enc].forwardedDistinct() >= n && distinct(idsOf(procs[cons])) >= n
	}, procs[enc], procs[cons])
	procs[enc].stop(syscall.SIGINT)
	procs[cons].stop(syscall.SIGINT)

	leaked := r.checkLeaks()
	record(t, result{id: ids[0], scenario: title + ": encrypt", count: r.countEncrypted(topicEnc), leaked: leaked, bound: 0, note: notes[enc]})
	consumers := []*proc{cons}
	if procs[cons] != cons {
		consumers = append(consumers, procs[cons])
	}
	record(t, result{id: ids[1], scenario: title + ": consume", count: r.countConsumed(consumers...), leaked: leaked, bound: 0, note: notes[cons]})
}

// TestKafkaSilentMidRun: the broker goes silent for 20 s under a running pipeline
// (encrypt → consume) and a second bridge with --max-outage 5s, all with --broker-timeout
// 12s (on Kafka it must exceed the group session's 10 s). Requests time out, the commands
// log the outage with its class and hold; the bounded bridge exits 3. Once the broker
// answers, the others go on by themselves and the bounded one, run again, delivers the rest.
func TestKafkaSilentMidRun(t *testing.T) {
	t.Parallel()
	const silentFor = 20 * time.Second
	r := newRig(t, rigOptions{kafkaProxy: true})
	env := r.env(r.vault.Token)
	args := []string{"--broker-timeout", "12s"}
	r.producePlain(1000)
	enc, cons := r.pipeline(env, args...)
	bounded := r.encryptTo("encrypt --max-outage", env, fieldMode, groupEnc2, topicEnc2, append(args, "--max-outage", "5s")...)
	waitFor(t, "300 handled by each", waitLong, func() bool {
		return enc.forwardedN() >= faultFrom && cons.consumedN() >= faultFrom && bounded.forwardedN() >= faultFrom
	}, enc, cons, bounded)
	encFrom, consFrom, boundedFrom := enc.stderr.Len(), cons.stderr.Len(), bounded.stderr.Len()
	r.kafka.Proxy().Silent()
	began := time.Now()

	code := bounded.wait(2 * time.Minute)
	boundedMsg := lastLine(bounded.stderr.String())
	boundedNote := fmt.Sprintf("exit %d after %.1f s: %q; run again after the fault, delivers the rest", code, bounded.end.Sub(began).Seconds(), shorten(boundedMsg, 150))
	if code != 3 || !bounded.outageNamed(boundedFrom) {
		t.Errorf("encrypt --max-outage 5s: exit %d, want 3 with the outage logged with its class: %s\n%s", code, boundedMsg, bounded.logs())
	}
	checkExitLine(t, bounded, "environment fault", "longer than --max-outage")
	// One attempt at a batch: the 12 s broker timeout and Vault's 10 s.
	if limit := maxOutageLimit(22*time.Second, 5*time.Second); bounded.end.Sub(began) > limit {
		t.Errorf("encrypt --max-outage 5s: exit %.1f s after the broker went silent, past its bound of %v", bounded.end.Sub(began).Seconds(), limit)
	}
	for time.Since(began) < silentFor {
		for _, p := range []*proc{enc, cons} {
			if !p.running() {
				t.Fatalf("%s exited (status %d) while the broker was silent\n%s", p.name, p.code(), p.logs())
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	logged := map[*proc]string{}
	for _, x := range []struct {
		p    *proc
		from int
	}{{enc, encFrom}, {cons, consFrom}} {
		switch l := x.p.outageLines(x.from); {
		case len(l) == 0:
			logged[x.p] = "no outage logged while silent"
		case x.p.outageNamed(x.from):
			logged[x.p] = fmt.Sprintf("outage logged %d× (class environment)", len(l))
		default:
			logged[x.p] = fmt.Sprintf("outage logged %d×, without its class", len(l))
			t.Errorf("%s logged the outage without its class: %s", x.p.name, l[0])
		}
	}
	r.kafka.Proxy().Pass()
	healed := time.Now()
	r.producePlain(600)
	rerun := r.encryptTo("encrypt --max-outage, run again", env, fieldMode, groupEnc2, topicEnc2, args...)
	r.mu.Lock()
	total := len(r.plain)
	r.mu.Unlock()
	waitFor(t, "every message handled after the silence", waitLong, func() bool {
		return enc.forwardedDistinct() >= total && distinct(idsOf(cons)) >= total &&
			distinct(append(forwarded(bounded.stdout.String()), forwarded(rerun.stdout.String())...)) >= total
	}, enc, cons, rerun)
	took := time.Since(healed)
	for _, p := range []*proc{enc, cons, rerun} {
		p.stop(syscall.SIGINT)
	}

	leaked := r.checkLeaks()
	note := func(p *proc) string {
		return fmt.Sprintf("broker silent %v; %s; every message %.1f s after it answered again", silentFor, logged[p], took.Seconds())
	}
	record(t, result{id: "7.6", scenario: "Kafka silent mid-run (--broker-timeout 12s): encrypt", count: r.countEncrypted(topicEnc), leaked: leaked, bound: encBatch + readAhead, note: note(enc)})
	record(t, result{id: "7.7", scenario: "Kafka silent mid-run (--broker-timeout 12s): consume", count: r.countConsumedFrom(topicEnc, r.plain, cons), leaked: leaked, bound: consBatch + readAhead, note: note(cons)})
	record(t, result{id: "7.8", scenario: "Kafka silent mid-run: encrypt --max-outage 5s", count: r.countEncrypted(topicEnc2), leaked: leaked, bound: encBatch + readAhead, note: boundedNote})
}
