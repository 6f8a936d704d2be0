package keyring

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// stubKeyring is an in-memory Keyring that counts calls, for the logic of DataKeys and
// UnwrapCache; the Vault keyring is tested against a real Vault server.
type stubKeyring struct {
	gens, unwraps atomic.Int64
	inflight, max atomic.Int64 // concurrent GenerateDataKey calls
	delay         time.Duration
	block         chan struct{} // if set, calls wait for it to close
	fail          atomic.Bool

	mu   sync.Mutex
	keys map[string][]byte
}

var errStub = errors.New("stub keyring failure")

func newStub() *stubKeyring { return &stubKeyring{keys: map[string][]byte{}} }

func (s *stubKeyring) wait() {
	if s.block != nil {
		<-s.block
	}
	time.Sleep(s.delay)
}

func (s *stubKeyring) GenerateDataKey(ctx context.Context) (*DataKey, error) {
	n := s.gens.Add(1)
	in := s.inflight.Add(1)
	defer s.inflight.Add(-1)
	for m := s.max.Load(); in > m && !s.max.CompareAndSwap(m, in); m = s.max.Load() {
	}
	s.wait()
	if s.fail.Load() {
		return nil, &Error{Op: "generate data key", KeyID: "stub", Kind: ErrUnavailable, Err: errStub}
	}
	k := make([]byte, DataKeySize)
	rand.Read(k)
	w := fmt.Sprintf("vault:v1:stub-%d", n)
	s.mu.Lock()
	s.keys[w] = k
	s.mu.Unlock()
	return &DataKey{Plaintext: k, Wrapped: w, KeyID: "stub", Version: 1}, nil
}

func (s *stubKeyring) UnwrapDataKey(ctx context.Context, keyID, wrapped string) ([]byte, error) {
	s.unwraps.Add(1)
	s.wait()
	if s.fail.Load() {
		return nil, &Error{Op: "unwrap data key", KeyID: keyID, Kind: ErrUnavailable, Err: errStub}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	k, ok := s.keys[wrapped]
	if !ok {
		return nil, &Error{Op: "unwrap data key", KeyID: keyID, Kind: ErrInvalidWrappedKey}
	}
	return append([]byte(nil), k...), nil
}

// fakeClock is a settable time source.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *fakeClock { return &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// WrappedVersion reads the version of the stub's Vault-shaped wrapped keys, as the Vault
// keyring does.
func (s *stubKeyring) WrappedVersion(wrapped string) int {
	n, _ := CiphertextVersion(wrapped)
	return n
}
