package keyring

import (
	"container/list"
	"context"
	"fmt"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/pubcrypt/pubcrypt/internal/telemetry"
)

// CacheOptions configures NewUnwrapCache. The zero value is useful.
type CacheOptions struct {
	// Size is the most data keys kept; 0 means 1024.
	Size int
	// TTL is how long an unwrapped key is kept after the key service returned it; 0 means
	// 1h. It bounds how long a key stays usable here after access to it was revoked.
	TTL time.Duration
}

// UnwrapCache is the receive side's memory of unwrapped data keys: a stream of messages
// under one data key costs one UnwrapDataKey call, and concurrent misses for the same
// wrapped key share one call. Failures are not cached. It is safe for concurrent use.
//
// Evicted keys are dropped, not zeroed: a caller may still hold one.
type UnwrapCache struct {
	kr   Keyring
	size int
	ttl  time.Duration
	now  func() time.Time

	mu    sync.Mutex
	lru   *list.List // of *cacheEntry, most recently used first
	index map[string]*list.Element
	calls singleflight.Group
}

type cacheEntry struct {
	id      string
	key     *DataKey
	expires time.Time
}

// NewUnwrapCache returns a cache in front of kr.
func NewUnwrapCache(kr Keyring, opts CacheOptions) *UnwrapCache {
	if opts.Size <= 0 {
		opts.Size = 1024
	}
	if opts.TTL <= 0 {
		opts.TTL = time.Hour
	}
	return &UnwrapCache{
		kr: kr, size: opts.Size, ttl: opts.TTL, now: time.Now,
		lru: list.New(), index: make(map[string]*list.Element),
	}
}

// Get returns the data key that wrapped unwraps to under keyID, from the cache or from
// the keyring. The same *DataKey is returned for the same wrapped key while it is cached,
// so its AEAD is built once.
func (c *UnwrapCache) Get(ctx context.Context, keyID, wrapped string) (*DataKey, error) {
	id := keyID + "\x00" + wrapped
	if k := c.lookup(id); k != nil {
		telemetry.CacheLookup(ctx, true)
		return k, nil
	}
	telemetry.CacheLookup(ctx, false)
	// The call runs detached from this caller's cancellation because other callers may be
	// waiting for it; the keyring's own timeout bounds it.
	detached := context.WithoutCancel(ctx)
	ch := c.calls.DoChan(id, func() (any, error) {
		if k := c.lookup(id); k != nil { // filled between our miss and this call
			return k, nil
		}
		pt, err := c.kr.UnwrapDataKey(detached, keyID, wrapped)
		if err != nil {
			return nil, err
		}
		if len(pt) != DataKeySize {
			return nil, fmt.Errorf("keyring: unwrapped data key for %q has %d bytes, want %d", keyID, len(pt), DataKeySize)
		}
		var version int
		if v, ok := c.kr.(WrappedVersioner); ok {
			version = v.WrappedVersion(wrapped)
		}
		k := &DataKey{Plaintext: pt, Wrapped: wrapped, KeyID: keyID, Version: version}
		c.add(id, k)
		return k, nil
	})
	select {
	case r := <-ch:
		if r.Err != nil {
			return nil, r.Err
		}
		return r.Val.(*DataKey), nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Cached returns the data key that wrapped unwraps to under keyID if the cache holds it,
// and nil otherwise, without asking the keyring: for a caller that knows the key service
// is failing and must not wait on it once more.
func (c *UnwrapCache) Cached(keyID, wrapped string) *DataKey {
	return c.lookup(keyID + "\x00" + wrapped)
}

func (c *UnwrapCache) lookup(id string) *DataKey {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.index[id]
	if !ok {
		return nil
	}
	e := el.Value.(*cacheEntry)
	if !c.now().Before(e.expires) {
		c.lru.Remove(el)
		delete(c.index, id)
		return nil
	}
	c.lru.MoveToFront(el)
	return e.key
}

func (c *UnwrapCache) add(id string, k *DataKey) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.index[id]; ok {
		c.lru.Remove(el)
	}
	c.index[id] = c.lru.PushFront(&cacheEntry{id: id, key: k, expires: c.now().Add(c.ttl)})
	for c.lru.Len() > c.size {
		oldest := c.lru.Back()
		c.lru.Remove(oldest)
		delete(c.index, oldest.Value.(*cacheEntry).id)
	}
}

// Len returns the number of keys cached, expired ones included until they are looked up
// or evicted.
func (c *UnwrapCache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lru.Len()
}
