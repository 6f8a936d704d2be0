package keyring

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

func TestNewDataKeysPolicy(t *testing.T) {
	for _, tc := range []struct {
		name string
		p    ReusePolicy
		ok   bool
	}{
		{"zero", ReusePolicy{}, true},
		{"caps", ReusePolicy{MaxMessages: MaxMessagesCap, MaxBytes: MaxBytesCap}, true},
		{"too many messages", ReusePolicy{MaxMessages: MaxMessagesCap + 1}, false},
		{"too many bytes", ReusePolicy{MaxBytes: MaxBytesCap + 1}, false},
		{"negative age", ReusePolicy{MaxAge: -time.Second}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := NewDataKeys(newStub(), tc.p)
			if (err == nil) != tc.ok {
				t.Fatalf("NewDataKeys(%+v) error = %v, want ok=%v", tc.p, err, tc.ok)
			}
			if tc.name == "zero" && (d.p.MaxAge != DefaultMaxAge || d.p.MaxMessages != DefaultMaxMessages || d.p.MaxBytes != DefaultMaxBytes) {
				t.Errorf("defaults = %+v", d.p)
			}
		})
	}
	if _, err := NewDataKeys(nil, ReusePolicy{}); err == nil {
		t.Error("NewDataKeys(nil) succeeded")
	}
}

// take is Take that fails the test on error and reports the key's wrapped form.
func take(t *testing.T, d *DataKeys, n int) (string, uint64) {
	t.Helper()
	k, seq, err := d.Take(context.Background(), n)
	if err != nil {
		t.Fatalf("Take(%d): %v", n, err)
	}
	return k.Wrapped, seq
}

func TestDataKeysLimits(t *testing.T) {
	type step struct {
		n       int
		advance time.Duration
		newKey  bool
		seq     uint64
	}
	for _, tc := range []struct {
		name  string
		p     ReusePolicy
		steps []step
	}{
		{"messages", ReusePolicy{MaxMessages: 3}, []step{
			{n: 1, newKey: true, seq: 0}, {n: 1, seq: 1}, {n: 1, seq: 2},
			{n: 1, newKey: true, seq: 0}, {n: 1, seq: 1},
		}},
		{"bytes", ReusePolicy{MaxBytes: 100}, []step{
			{n: 40, newKey: true, seq: 0}, {n: 60, seq: 1}, {n: 0, seq: 2},
			{n: 1, newKey: true, seq: 0}, {n: 99, seq: 1}, {n: 100, newKey: true, seq: 0},
		}},
		{"age", ReusePolicy{MaxAge: time.Minute}, []step{
			{n: 1, newKey: true, seq: 0}, {n: 1, advance: 59 * time.Second, seq: 1},
			{n: 1, advance: time.Second, newKey: true, seq: 0}, {n: 1, seq: 1},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			kr := newStub()
			clock := newClock()
			d, err := NewDataKeys(kr, tc.p)
			if err != nil {
				t.Fatal(err)
			}
			d.now = clock.Now
			var last string
			for i, s := range tc.steps {
				clock.Add(s.advance)
				w, seq := take(t, d, s.n)
				if (w != last) != s.newKey || seq != s.seq {
					t.Fatalf("step %d (n=%d): new key %v seq %d, want new key %v seq %d", i, s.n, w != last, seq, s.newKey, s.seq)
				}
				last = w
			}
		})
	}
}

func TestDataKeysTooLarge(t *testing.T) {
	d, _ := NewDataKeys(newStub(), ReusePolicy{MaxBytes: 100})
	if _, _, err := d.Take(context.Background(), 101); err == nil {
		t.Error("Take of more than MaxBytes succeeded")
	}
	if _, _, err := d.Take(context.Background(), -1); err == nil {
		t.Error("Take(-1) succeeded")
	}
}

func TestDataKeysPerMessage(t *testing.T) {
	kr := newStub()
	d, _ := NewDataKeys(kr, ReusePolicy{PerMessage: true})
	seen := map[string]bool{}
	for range 5 {
		w, seq := take(t, d, 10)
		if seen[w] || seq != 0 {
			t.Fatalf("PerMessage reused key %s or seq %d != 0", w, seq)
		}
		seen[w] = true
	}
	if kr.gens.Load() != 5 {
		t.Errorf("GenerateDataKey calls = %d, want 5", kr.gens.Load())
	}
}

func TestDataKeysExpire(t *testing.T) {
	kr := newStub()
	d, _ := NewDataKeys(kr, ReusePolicy{})
	a, _ := take(t, d, 1)
	d.Expire()
	b, seq := take(t, d, 1)
	if a == b || seq != 0 || kr.gens.Load() != 2 {
		t.Errorf("after Expire: same key %v, seq %d, %d calls", a == b, seq, kr.gens.Load())
	}
}

// TestDataKeysConcurrent checks the security invariant: no (key, sequence number) pair is
// handed out twice, each key's numbers are 0..uses-1, and only one GenerateDataKey call
// is ever in flight.
func TestDataKeysConcurrent(t *testing.T) {
	const goroutines, each, perKey = 64, 500, 1000
	kr := newStub()
	kr.delay = time.Millisecond
	d, _ := NewDataKeys(kr, ReusePolicy{MaxMessages: perKey})
	type use struct {
		key string
		seq uint64
	}
	results := make([][]use, goroutines)
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for range each {
				k, seq, err := d.Take(context.Background(), 100)
				if err != nil {
					t.Error(err)
					return
				}
				results[g] = append(results[g], use{k.Wrapped, seq})
			}
		})
	}
	wg.Wait()
	seen := map[use]bool{}
	perKeyCount := map[string]uint64{}
	maxSeq := map[string]uint64{}
	for _, r := range results {
		for _, u := range r {
			if seen[u] {
				t.Fatalf("key %s sequence %d handed out twice", u.key, u.seq)
			}
			seen[u] = true
			perKeyCount[u.key]++
			maxSeq[u.key] = max(maxSeq[u.key], u.seq)
		}
	}
	for k, n := range perKeyCount {
		if maxSeq[k] != n-1 || n > perKey {
			t.Errorf("key %s: %d uses, max sequence %d", k, n, maxSeq[k])
		}
	}
	if want := int64(goroutines * each / perKey); kr.gens.Load() != want {
		t.Errorf("GenerateDataKey calls = %d, want %d", kr.gens.Load(), want)
	}
	if kr.max.Load() != 1 {
		t.Errorf("%d GenerateDataKey calls in flight at once, want 1", kr.max.Load())
	}
}

func TestDataKeysFailClosed(t *testing.T) {
	kr := newStub()
	clock := newClock()
	d, _ := NewDataKeys(kr, ReusePolicy{MaxAge: time.Minute})
	d.now = clock.Now
	take(t, d, 1)
	clock.Add(time.Minute)
	kr.fail.Store(true)
	kr.block = make(chan struct{})
	// Everyone waiting for the failed key gets the error, from one call.
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			if k, _, err := d.Take(context.Background(), 1); !errors.Is(err, ErrUnavailable) || k != nil {
				t.Errorf("Take with an expired key and a failing keyring = %v, %v; want ErrUnavailable", k, err)
			}
		})
	}
	time.Sleep(100 * time.Millisecond) // let them all queue behind the blocked call
	close(kr.block)
	wg.Wait()
	if n := kr.gens.Load(); n != 2 {
		t.Errorf("GenerateDataKey calls = %d, want 2 (one shared by the waiters)", n)
	}
	kr.fail.Store(false)
	if _, seq := take(t, d, 1); seq != 0 {
		t.Errorf("after recovery seq = %d, want a fresh key", seq)
	}
}

func TestDataKeysCallerCancel(t *testing.T) {
	kr := newStub()
	kr.block = make(chan struct{})
	d, _ := NewDataKeys(kr, ReusePolicy{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, _, err := d.Take(ctx, 1); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Take with a blocked keyring = %v, want deadline exceeded", err)
	}
	// The abandoned call still completes and serves the next caller.
	done := make(chan error)
	go func() { _, _, err := d.Take(context.Background(), 1); done <- err }()
	close(kr.block)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if kr.gens.Load() != 1 {
		t.Errorf("GenerateDataKey calls = %d, want 1", kr.gens.Load())
	}
}

func TestTakeNReservesContiguousRanges(t *testing.T) {
	kr := newStub()
	d, err := NewDataKeys(kr, ReusePolicy{MaxMessages: 10})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	k1, first, err := d.TakeN(ctx, 4, 100)
	if err != nil || first != 0 {
		t.Fatalf("first range: %d, %v", first, err)
	}
	_, first, _ = d.TakeN(ctx, 4, 100)
	if first != 4 {
		t.Fatalf("second range starts at %d, want 4", first)
	}
	// 8 of 10 uses taken: a range of 3 does not fit, so a new key starts at 0.
	k3, first, _ := d.TakeN(ctx, 3, 100)
	if k3 == k1 || first != 0 {
		t.Fatalf("range crossing MaxMessages stayed on the old key (first %d)", first)
	}
	if _, _, err := d.TakeN(ctx, 11, 1); err == nil {
		t.Fatal("a range larger than MaxMessages was accepted")
	}
	if _, _, err := d.TakeN(ctx, 0, 1); err == nil {
		t.Fatal("an empty range was accepted")
	}
}

// A MaxAge shorter than the key service's latency must not make Take ask for keys
// forever: the caller that waited for a key gets it.
func TestTinyMaxAgeStillProgresses(t *testing.T) {
	d, err := NewDataKeys(newStub(), ReusePolicy{MaxAge: time.Nanosecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for range 10 {
		if _, _, err := d.Take(ctx, 10); err != nil {
			t.Fatalf("Take with a 1ns MaxAge: %v", err)
		}
	}
}
