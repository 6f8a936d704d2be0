package faultsuite

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestBrokerAndVaultRestarted is issue 8's "must show": under a running encrypt (field
// mode) and a consume of its output, the broker is stopped and restarted with its data,
// then Vault is killed and restarted; both commands go on by themselves and every message
// arrives. Duplicates are bounded by the sum of the two faults' bounds: one batch plus the
// read-ahead for the broker, one batch for Vault.
func TestBrokerAndVaultRestarted(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOptions{persistentVault: true, kafkaData: true})
	env := r.env(r.vault.Token)
	r.producePlain(1000)
	enc, cons := r.pipeline(env)
	waitFor(t, "300 consumed", waitLong, func() bool { return cons.consumedN() >= faultFrom }, enc, cons)
	encFrom, consFrom := enc.stderr.Len(), cons.stderr.Len()

	// The broker: down 5 s, back with its data, and a second stream after it.
	r.brokerOutage(5*time.Second, enc, cons)
	r.producePlain(600)
	waitFor(t, "the second stream flowing after the broker restart", waitLong, func() bool { return distinct(idsOf(cons)) >= 1300 }, enc, cons)

	// Vault: killed mid-stream, a third stream arrives that needs it, back after 3 s.
	encVault := enc.stderr.Len()
	if err := r.vault.Kill(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	r.producePlain(600)
	waitFor(t, "encrypt holding for Vault", time.Minute, func() bool { return enc.outageNamed(encVault) }, enc, cons)
	held := enc.forwardedN()
	if d := 3*time.Second - time.Since(killed); d > 0 {
		time.Sleep(d) // the outage's own length
	}
	if n := enc.forwardedN(); n != held {
		t.Errorf("encrypt forwarded %d messages while Vault was down", n-held)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := r.vault.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	restarted := time.Now()
	r.mu.Lock()
	total := len(r.plain)
	r.mu.Unlock()
	waitFor(t, "every message forwarded and consumed", waitLong, func() bool {
		return enc.forwardedDistinct() >= total && distinct(idsOf(cons)) >= total
	}, enc, cons)
	took := time.Since(restarted)
	outages := map[*proc]int{enc: len(enc.outageLines(encFrom)), cons: len(cons.outageLines(consFrom))}
	enc.stop(syscall.SIGINT)
	cons.stop(syscall.SIGINT)

	leaked := r.checkLeaks()
	note := func(p *proc) string {
		logged := fmt.Sprintf("%d outage(s) logged, each with its class", outages[p])
		if outages[p] == 0 {
			logged = "no outage logged (nothing to do while the other held)"
		}
		return fmt.Sprintf("broker down 5 s, then Vault SIGKILLed for 3 s; %s; every message %.1f s after Vault was back", logged, took.Seconds())
	}
	record(t, result{id: "8.1", scenario: "broker restarted, then Vault restarted, under running commands: encrypt", count: r.countEncrypted(topicEnc), leaked: leaked, bound: 2*encBatch + readAhead, note: note(enc)})
	record(t, result{id: "8.2", scenario: "broker restarted, then Vault restarted, under running commands: consume", count: r.countConsumedFrom(topicEnc, r.plain, cons), leaked: leaked, bound: 2*consBatch + readAhead, note: note(cons)})
	for _, p := range []*proc{enc, cons} {
		for _, l := range p.outageLines(0) {
			if !strings.Contains(l, "class=environment") {
				t.Errorf("%s logged an outage without its class: %s", p.name, l)
			}
		}
	}
}
