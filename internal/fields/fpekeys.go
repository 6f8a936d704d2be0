package fields

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/pubcrypt/pubcrypt/internal/fpe"
	"github.com/pubcrypt/pubcrypt/keyring"
)

const (
	// DefaultFPERefresh is how long a Sealer uses the latest FPE key version it knows
	// before it asks the key service again, so that a rotation is picked up.
	DefaultFPERefresh = time.Minute
	// fpeTTL is how long an Opener keeps an FPE key of one version: it bounds how long a
	// version stays usable here after the key service stopped allowing it.
	fpeTTL = time.Hour
	// fpeCacheSize bounds the number of (key, version) pairs an Opener keeps, and the
	// latest versions a Sealer keeps: with subject keys there is one key per subject.
	fpeCacheSize = 4096
)

// fpeKeys caches FF1 ciphers by key name and version. Concurrent misses for the same
// key share one key-service call; failures are not cached.
type fpeKeys struct {
	fk      keyring.FieldKeyring
	refresh time.Duration
	ttl     time.Duration
	now     func() time.Time

	mu        sync.Mutex
	latest    map[string]fpeEntry
	byVersion map[fpeID]fpeEntry
	calls     singleflight.Group
}

type fpeID struct {
	name    string
	version int
}

type fpeEntry struct {
	ff1     *fpe.FF1
	version int
	at      time.Time
}

func newFPEKeys(fk keyring.FieldKeyring, refresh time.Duration) *fpeKeys {
	return &fpeKeys{
		fk: fk, refresh: refresh, ttl: fpeTTL, now: time.Now,
		latest: make(map[string]fpeEntry), byVersion: make(map[fpeID]fpeEntry),
	}
}

// current returns the latest version of the named key, asking the key service at most
// once per refresh interval.
func (c *fpeKeys) current(ctx context.Context, name string) (*fpe.FF1, int, error) {
	c.mu.Lock()
	e, ok := c.latest[name]
	c.mu.Unlock()
	if ok && c.now().Sub(e.at) < c.refresh {
		return e.ff1, e.version, nil
	}
	e, err := c.fetch(ctx, name, 0)
	if err != nil {
		return nil, 0, err
	}
	return e.ff1, e.version, nil
}

// get returns the given version of the named key.
func (c *fpeKeys) get(ctx context.Context, name string, version int) (*fpe.FF1, error) {
	c.mu.Lock()
	e, ok := c.byVersion[fpeID{name, version}]
	c.mu.Unlock()
	if ok && c.now().Sub(e.at) < c.ttl {
		return e.ff1, nil
	}
	e, err := c.fetch(ctx, name, version)
	if err != nil {
		return nil, err
	}
	return e.ff1, nil
}

func (c *fpeKeys) fetch(ctx context.Context, name string, version int) (fpeEntry, error) {
	if c.fk == nil {
		return fpeEntry{}, fmt.Errorf("fields: FPE key %q: no FieldKeyring configured", name)
	}
	// Detached: other callers may be waiting for this call (as keyring.UnwrapCache does).
	detached := context.WithoutCancel(ctx)
	ch := c.calls.DoChan(name+"\x00"+strconv.Itoa(version), func() (any, error) {
		at := c.now()
		key, got, err := c.fk.FPEKey(detached, name, version)
		if err != nil {
			return nil, fmt.Errorf("fields: FPE key %q: %w", name, err)
		}
		switch {
		case got <= 0:
			return nil, fmt.Errorf("fields: FPE key %q: key service returned version %d", name, got)
		case version != 0 && got != version:
			return nil, fmt.Errorf("fields: FPE key %q: asked for version %d, got %d", name, version, got)
		case len(key) != 32:
			return nil, fmt.Errorf("fields: FPE key %q version %d: %d bytes, want 32", name, got, len(key))
		}
		ff, err := fpe.NewFF1(key, 10)
		if err != nil {
			return nil, fmt.Errorf("fields: FPE key %q version %d: %w", name, got, err)
		}
		e := fpeEntry{ff1: ff, version: got, at: at}
		c.mu.Lock()
		defer c.mu.Unlock()
		if version == 0 {
			c.latest[name] = e
		}
		c.byVersion[fpeID{name, got}] = e
		c.evict()
		return e, nil
	})
	select {
	case r := <-ch:
		if r.Err != nil {
			return fpeEntry{}, r.Err
		}
		return r.Val.(fpeEntry), nil
	case <-ctx.Done():
		return fpeEntry{}, ctx.Err()
	}
}

// evict keeps byVersion within fpeCacheSize: expired entries first, then the oldest.
// c.mu must be held.
func (c *fpeKeys) evict() {
	if len(c.byVersion) <= fpeCacheSize {
		return
	}
	now := c.now()
	var oldest fpeID
	var oldestAt time.Time
	for id, e := range c.byVersion {
		if now.Sub(e.at) >= c.ttl {
			delete(c.byVersion, id)
			continue
		}
		if oldestAt.IsZero() || e.at.Before(oldestAt) {
			oldest, oldestAt = id, e.at
		}
	}
	if len(c.byVersion) > fpeCacheSize {
		delete(c.byVersion, oldest)
	}
	if len(c.latest) > fpeCacheSize {
		for name, e := range c.latest {
			if now.Sub(e.at) >= c.refresh || len(c.latest) > fpeCacheSize {
				delete(c.latest, name)
			}
		}
	}
}
