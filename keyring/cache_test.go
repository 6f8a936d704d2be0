package keyring

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

func TestUnwrapCacheCollapses(t *testing.T) {
	kr := newStub()
	k, _ := kr.GenerateDataKey(context.Background())
	kr.delay = 20 * time.Millisecond
	c := NewUnwrapCache(kr, CacheOptions{})
	got := make([]*DataKey, 50)
	var wg sync.WaitGroup
	for i := range got {
		wg.Go(func() {
			var err error
			if got[i], err = c.Get(context.Background(), k.KeyID, k.Wrapped); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if n := kr.unwraps.Load(); n != 1 {
		t.Errorf("UnwrapDataKey calls = %d, want 1", n)
	}
	for _, g := range got {
		if g != got[0] || !bytes.Equal(g.Plaintext, k.Plaintext) || g.Version != 1 || g.KeyID != "stub" {
			t.Fatalf("Get returned %+v, want one shared key equal to the generated one", g)
		}
	}
}

func TestUnwrapCacheErrorsNotCached(t *testing.T) {
	kr := newStub()
	k, _ := kr.GenerateDataKey(context.Background())
	c := NewUnwrapCache(kr, CacheOptions{})
	kr.fail.Store(true)
	if _, err := c.Get(context.Background(), k.KeyID, k.Wrapped); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Get with a failing keyring = %v", err)
	}
	kr.fail.Store(false)
	if _, err := c.Get(context.Background(), k.KeyID, k.Wrapped); err != nil {
		t.Fatal(err)
	}
	if kr.unwraps.Load() != 2 {
		t.Errorf("UnwrapDataKey calls = %d, want 2", kr.unwraps.Load())
	}
}

func TestUnwrapCacheLRUAndTTL(t *testing.T) {
	kr := newStub()
	clock := newClock()
	keys := make([]*DataKey, 3)
	for i := range keys {
		keys[i], _ = kr.GenerateDataKey(context.Background())
	}
	c := NewUnwrapCache(kr, CacheOptions{Size: 2, TTL: time.Minute})
	c.now = clock.Now
	get := func(i int, wantCalls int64) {
		t.Helper()
		if _, err := c.Get(context.Background(), "stub", keys[i].Wrapped); err != nil {
			t.Fatal(err)
		}
		if n := kr.unwraps.Load(); n != wantCalls {
			t.Fatalf("after Get(%d): %d UnwrapDataKey calls, want %d", i, n, wantCalls)
		}
	}
	get(0, 1)
	get(1, 2)
	get(0, 2) // hit, 0 is now most recent
	get(2, 3) // evicts 1
	get(0, 3)
	get(1, 4)
	if c.Len() != 2 {
		t.Errorf("Len = %d, want 2", c.Len())
	}
	clock.Add(time.Minute)
	get(1, 5) // expired
}

func TestUnwrapCacheCallerCancel(t *testing.T) {
	kr := newStub()
	k, _ := kr.GenerateDataKey(context.Background())
	kr.block = make(chan struct{})
	c := NewUnwrapCache(kr, CacheOptions{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { _, err := c.Get(ctx, k.KeyID, k.Wrapped); done <- err }()
	time.Sleep(10 * time.Millisecond)
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Get = %v", err)
	}
	close(kr.block)
	if _, err := c.Get(context.Background(), k.KeyID, k.Wrapped); err != nil {
		t.Fatal(err)
	}
	if kr.unwraps.Load() != 1 {
		t.Errorf("UnwrapDataKey calls = %d, want 1 (the abandoned call fills the cache)", kr.unwraps.Load())
	}
}
