package faultsuite

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Scenario 5: the static token the commands were started with (VAULT_TOKEN, no auth
// method that could log in again) is revoked, or expires, in the middle of a stream.
// Nothing can mend it in place, and waiting would hold the stream forever: each command
// must stop on its own with the environment's exit status (3), saying that the token is
// invalid and cannot be replaced, without acknowledging what it could not protect or
// decrypt, and deliver every message when started again, in the same groups, with a
// good token. (With --vault-auth approle and the like the keyring logs in again
// instead: internal/e2e TestAppRoleRevokedToken, cmd/pubcrypt TestEncryptLogsInByAppRole.)
func TestTokenRevoked(t *testing.T) {
	t.Parallel()
	runTokenFault(t, [2]string{"5.1", "5.2"}, "token revoked mid-stream", 0, func(r *rig, tok string) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := r.vault.RevokeToken(ctx, tok); err != nil {
			r.t.Fatal(err)
		}
	})
}

func TestTokenExpired(t *testing.T) {
	t.Parallel()
	// Long enough for both commands to start and handle the first messages on a loaded
	// machine; the test then waits until Vault refuses the token.
	const ttl = 20 * time.Second
	runTokenFault(t, [2]string{"5.3", "5.4"}, fmt.Sprintf("token expired mid-stream (TTL %v)", ttl), ttl, func(r *rig, tok string) {
		waitFor(r.t, "Vault refusing the token", ttl+time.Minute, func() bool { return !r.tokenValid(tok) })
	})
}

// tokenValid reports whether Vault still accepts tok.
func (r *rig) tokenValid(tok string) bool {
	c, err := r.vault.Client()
	if err != nil {
		r.t.Fatal(err)
	}
	c.SetToken(tok)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = c.Auth().Token().LookupSelfWithContext(ctx)
	return err == nil
}

func runTokenFault(t *testing.T, ids [2]string, title string, ttl time.Duration, fail func(r *rig, tok string)) {
	r := newRig(t, rigOptions{})
	r.producePlain(part1)
	pre2 := r.encryptForConsume(fieldMode, part2)
	r.produce(r.encryptForConsume(fieldMode, part1))

	tok := r.token(ttl)
	env := r.env(tok)
	enc := &side{p: r.encrypt("encrypt", env, fieldMode), group: groupEnc, topic: topicPlain}
	cons := &side{p: r.consume("consume", env, topicPre), group: groupCons, topic: topicPre}
	waitFor(t, fmt.Sprintf("%d handled on each side", faultFrom), waitLong, func() bool {
		return enc.handled() >= faultFrom && cons.handled() >= faultFrom
	}, enc.p, cons.p)
	for _, s := range []*side{enc, cons} {
		s.errFrom = s.p.stderr.Len()
	}
	fail(r, tok)
	began := time.Now() // Vault refuses the token from here on (an expired one maybe a little before)
	r.producePlain(part2)
	r.produce(pre2)

	// Each stops by itself: exit 3, naming the cause, nothing acknowledged past what it handled.
	var stops []string
	for _, s := range []*side{enc, cons} {
		code := s.p.wait(time.Minute)
		s.outageAfter = max(0, s.p.end.Sub(began)) // an expiring token may be refused a moment before "began"
		tail := s.p.stderr.String()[s.errFrom:]
		if code != 3 || !strings.Contains(tail, "cannot be replaced") || !strings.Contains(tail, "permission denied") {
			t.Errorf("%s: exit %d, want 3 with an error saying the token is invalid and cannot be replaced:\n%s", s.p.name, code, s.p.logs())
		}
		stops = append(stops, fmt.Sprintf("exit %d", code))
		if off := r.committed(s.group, s.topic); off > int64(s.handled()) {
			t.Errorf("%s: the group's offset is %d, past the %d messages it handled", s.p.name, off, s.handled())
		}
	}

	// Started again with a good token: every message arrives.
	good := r.env(r.token(0))
	restarted := time.Now()
	enc2 := r.encrypt("encrypt, good token", good, fieldMode)
	cons2 := r.consume("consume, good token", good, topicPre)
	r.mu.Lock()
	nPlain, nPre := len(r.plain), len(r.pre)
	r.mu.Unlock()
	waitFor(t, "every message handled with the good token", waitLong, func() bool {
		return distinct(append(forwarded(enc.p.stdout.String()), forwarded(enc2.stdout.String())...)) >= nPlain &&
			distinct(append(idsOf(cons.p), idsOf(cons2)...)) >= nPre
	}, enc2, cons2)
	took := time.Since(restarted)
	enc2.stop(syscall.SIGINT)
	cons2.stop(syscall.SIGINT)

	leaked := r.checkLeaks()
	note := func(s *side, stop string) string {
		return fmt.Sprintf("stopped by itself, %s (environment: permission denied, token invalid and cannot be replaced) %.1f s after the fault, nothing acked past the offsets it handled; restarted with a good token: every message in %.1f s",
			stop, s.outageAfter.Seconds(), took.Seconds())
	}
	record(t, result{id: ids[0], scenario: title + ": encrypt", count: r.countEncrypted(topicEnc), leaked: leaked, bound: encBatch, note: note(enc, stops[0])})
	record(t, result{id: ids[1], scenario: title + ": consume", count: r.countConsumed(cons.p, cons2), leaked: leaked, bound: consBatch, note: note(cons, stops[1])})
}
