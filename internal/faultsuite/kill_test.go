package faultsuite

import (
	"fmt"
	"syscall"
	"testing"
	"time"
)

// Scenario 4: encrypt and consume killed with SIGKILL in the middle of a stream, then
// started again in the same consumer groups. Each commits its group's offsets after every
// batch, so a kill sends or prints again at most the batch it was in (encrypt: --batch
// 50; consume: its batch of 100). The restarted command gets the partition once the
// broker has given up on the killed member (its 10 s session).
func TestKilledMidStream(t *testing.T) {
	t.Parallel()
	const n = 3000
	r := newRig(t, rigOptions{})
	env := r.env(r.vault.Token)
	r.producePlain(n)
	r.produce(r.encryptForConsume(fieldMode, n))

	enc := r.encrypt("encrypt", env, fieldMode)
	enc.killAt("encrypted ", 425) // in the middle of reporting a batch of 50: sent, maybe not committed
	cons := r.consume("consume", env, topicPre)
	cons.killAt("[pubcrypt ", 450) // in the middle of a batch of 100
	for _, p := range []*proc{enc, cons} {
		p.wait(waitLong)
		if p.code() != -1 {
			t.Fatalf("%s exited with status %d before it was killed\n%s", p.name, p.code(), p.logs())
		}
	}
	encAt, consAt := enc.forwardedN(), cons.consumedN()
	t.Logf("killed: encrypt after %d forwarded, consume after %d printed", encAt, consAt)
	if encAt >= n || consAt >= n {
		t.Fatalf("the kill came after the stream ended (encrypt %d, consume %d of %d): not mid-stream", encAt, consAt, n)
	}

	started := time.Now()
	enc2 := r.encrypt("encrypt, restarted", env, fieldMode)
	cons2 := r.consume("consume, restarted", env, topicPre)
	waitFor(t, "every message handled after the restart", waitLong, func() bool {
		return distinct(append(forwarded(enc.stdout.String()), forwarded(enc2.stdout.String())...)) >= n &&
			distinct(append(idsOf(cons), idsOf(cons2)...)) >= n
	}, enc2, cons2)
	took := time.Since(started)
	enc2.stop(syscall.SIGINT)
	cons2.stop(syscall.SIGINT)

	leaked := r.checkLeaks()
	note := func(at int, what string) string {
		return fmt.Sprintf("SIGKILL after %d %s; the restart (same group) had every message %.1f s later, the broker's 10 s session included", at, what, took.Seconds())
	}
	record(t, result{id: "4.1", scenario: "encrypt SIGKILLed mid-stream, restarted (--batch 50)", count: r.countEncrypted(topicEnc), leaked: leaked, bound: encBatch, note: note(encAt, "forwarded")})
	record(t, result{id: "4.2", scenario: "consume SIGKILLed mid-stream, restarted", count: r.countConsumed(cons, cons2), leaked: leaked, bound: consBatch, note: note(consAt, "printed")})
}
