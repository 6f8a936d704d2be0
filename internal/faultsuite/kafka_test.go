package faultsuite

import (
	"context"
	"fmt"
	"syscall"
	"testing"
	"time"
)

// Scenario 3: the Kafka broker stopped in the middle of a stream and started again with
// its data, under a running encrypt (field mode) and a consume that reads encrypt's
// output. A short outage (3 s) and one longer than the ~12 s after which kafkapubsub's
// subscription fails for good and must be reopened (15 s). Both commands must go on by
// themselves. The bound on duplicates is one batch plus what the consumer had read ahead
// (sarama: up to 256 per partition) and handled while its commit could not reach the broker.
func TestKafkaRestarted(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		ids  [2]string
		down time.Duration
	}{
		{[2]string{"3.1", "3.2"}, 3 * time.Second},
		{[2]string{"3.3", "3.4"}, 15 * time.Second},
	} {
		t.Run(c.down.String(), func(t *testing.T) {
			t.Parallel()
			runKafkaRestart(t, c.ids, c.down)
		})
	}
}

// pipeline starts encrypt (plaintext topic → topicEnc, field mode) and a consume of topicEnc.
func (r *rig) pipeline(env []string, extra ...string) (enc, cons *proc) {
	return r.encrypt("encrypt", env, fieldMode, extra...), r.consume("consume", env, topicEnc, extra...)
}

// brokerOutage stops the broker, keeps it down for down (failing if a command exits
// meanwhile) and starts it again with its data.
func (r *rig) brokerOutage(down time.Duration, procs ...*proc) {
	r.t.Helper()
	r.kafka.Stop()
	deadline := time.Now().Add(down)
	for time.Now().Before(deadline) {
		for _, p := range procs {
			if !p.running() {
				r.t.Fatalf("%s exited (status %d) while the broker was down\n%s", p.name, p.code(), p.logs())
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := r.kafka.Restart(ctx); err != nil {
		r.t.Fatal(err)
	}
}

func runKafkaRestart(t *testing.T, ids [2]string, down time.Duration) {
	r := newRig(t, rigOptions{kafkaData: true})
	env := r.env(r.vault.Token)
	r.producePlain(1000)
	enc, cons := r.pipeline(env)
	waitFor(t, "300 consumed", waitLong, func() bool { return cons.consumedN() >= faultFrom }, enc, cons)
	encFrom, consFrom := enc.stderr.Len(), cons.stderr.Len()
	encAt, consAt := enc.forwardedN(), cons.consumedN()
	r.brokerOutage(down, enc, cons)
	restarted := time.Now()
	r.producePlain(600) // a second stream, after the restart
	r.mu.Lock()
	total := len(r.plain)
	r.mu.Unlock()
	waitFor(t, "every message forwarded and consumed", waitLong, func() bool {
		return enc.forwardedDistinct() >= total && distinct(idsOf(cons)) >= total
	}, enc, cons)
	took := time.Since(restarted)
	outages := map[*proc]int{enc: len(enc.outageLines(encFrom)), cons: len(cons.outageLines(consFrom))}
	named := map[*proc]bool{enc: enc.outageNamed(encFrom), cons: cons.outageNamed(consFrom)}
	enc.stop(syscall.SIGINT)
	cons.stop(syscall.SIGINT)

	leaked := r.checkLeaks()
	note := func(p *proc, at int) string {
		logged := "no outage logged (nothing to do while the broker was down)"
		if outages[p] > 0 {
			logged = fmt.Sprintf("outage logged %d×", outages[p])
			if named[p] {
				logged += " (class environment)"
			}
		}
		return fmt.Sprintf("broker stopped after %d handled, %v down; %s; every message %.1f s after the restart", at, down, logged, took.Seconds())
	}
	title := fmt.Sprintf("Kafka broker down %v mid-stream, restarted with its data", down)
	record(t, result{id: ids[0], scenario: title + ": encrypt", count: r.countEncrypted(topicEnc), leaked: leaked, bound: encBatch + readAhead, note: note(enc, encAt)})
	record(t, result{id: ids[1], scenario: title + ": consume", count: r.countConsumedFrom(topicEnc, r.plain, cons), leaked: leaked, bound: consBatch + readAhead, note: note(cons, consAt)})
}
