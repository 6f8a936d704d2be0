package keyring

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/pubcrypt/pubcrypt/fault"
	"github.com/pubcrypt/pubcrypt/internal/telemetry"
)

// Reuse limits. The caps keep AES-GCM with the wire format's per-key sequence-number
// nonces well inside its safety margins: at most 2^32 messages and 2^36 bytes (64 GiB) of
// plaintext under one data key. The format specification relies on them.
const (
	DefaultMaxAge      = 5 * time.Minute
	DefaultMaxMessages = 1 << 24
	DefaultMaxBytes    = 1 << 32
	MaxMessagesCap     = 1 << 32
	MaxBytesCap        = 1 << 36
)

// ReusePolicy says how long the send side keeps using one data key. The zero value means
// the defaults: five minutes, 2^24 messages, 4 GiB. Reuse is what makes a stream cost one
// key-service call per key instead of one per message (as Kroxylicious' DEK limits and the
// AWS Encryption SDK's caching materials manager do); the limits bound how much data one
// leaked data key exposes and keep AES-GCM within its margins.
type ReusePolicy struct {
	// MaxAge is how long a data key is used after it was generated; 0 means 5m.
	MaxAge time.Duration
	// MaxMessages is how many messages one data key encrypts; 0 means 2^24, at most 2^32.
	MaxMessages uint64
	// MaxBytes is how many plaintext bytes one data key encrypts; 0 means 2^32, at most 2^36.
	MaxBytes uint64
	// PerMessage asks for a fresh data key for every message (one key-service call each);
	// the other limits are then ignored.
	PerMessage bool
}

// DataKeys hands out the current data key of the send side and replaces it when a limit
// of its ReusePolicy is reached. It is safe for concurrent use.
type DataKeys struct {
	kr  Keyring
	p   ReusePolicy
	now func() time.Time

	mu      sync.Mutex
	cur     *current
	pending *flight // the GenerateDataKey call in progress, nil if none
	epoch   uint64  // counts Expire calls; a key generated before one is not installed
}

type current struct {
	key     *DataKey
	created time.Time
	uses    uint64 // next sequence number
	bytes   uint64
}

type flight struct {
	done chan struct{}
	err  error
	cur  *current // the key it installed, if any
}

// NewDataKeys returns DataKeys drawing keys from kr under policy p.
func NewDataKeys(kr Keyring, p ReusePolicy) (*DataKeys, error) {
	if kr == nil {
		return nil, errors.New("keyring: NewDataKeys needs a Keyring")
	}
	if p.MaxAge < 0 {
		return nil, fmt.Errorf("keyring: ReusePolicy.MaxAge %v is negative", p.MaxAge)
	}
	if p.MaxMessages > MaxMessagesCap {
		return nil, fmt.Errorf("keyring: ReusePolicy.MaxMessages %d is above the AES-GCM cap of 2^32 messages per data key", p.MaxMessages)
	}
	if p.MaxBytes > MaxBytesCap {
		return nil, fmt.Errorf("keyring: ReusePolicy.MaxBytes %d is above the AES-GCM cap of 2^36 bytes per data key", p.MaxBytes)
	}
	if p.MaxAge == 0 {
		p.MaxAge = DefaultMaxAge
	}
	if p.MaxMessages == 0 {
		p.MaxMessages = DefaultMaxMessages
	}
	if p.MaxBytes == 0 {
		p.MaxBytes = DefaultMaxBytes
	}
	return &DataKeys{kr: kr, p: p, now: time.Now}, nil
}

// Take reserves one use of the current data key for a message of n plaintext bytes and
// returns the key with the sequence number of this use: 0, 1, 2, ... per key, never
// repeated for the same key (the wire format derives the GCM nonce from it). When this use
// would cross a limit, Take first replaces the key; concurrent callers share one
// GenerateDataKey call. If that call fails, Take returns its error: it never falls back to
// an exhausted or expired key.
func (d *DataKeys) Take(ctx context.Context, n int) (*DataKey, uint64, error) {
	return d.TakeN(ctx, 1, n)
}

// TakeN reserves count consecutive uses of one data key for a message of n plaintext
// bytes in all (field-level encryption seals the message and each of its fields under one
// key, each with its own nonce) and returns the key and the first sequence number; the
// message may use first, first+1, ..., first+count-1. The uses count against
// MaxMessages. With PerMessage, a fresh key is generated and first is 0.
func (d *DataKeys) TakeN(ctx context.Context, count, n int) (*DataKey, uint64, error) {
	if n < 0 {
		return nil, 0, fmt.Errorf("keyring: Take of a negative size %d", n)
	}
	if count < 1 {
		return nil, 0, fmt.Errorf("keyring: TakeN of %d uses", count)
	}
	size, uses := uint64(n), uint64(count)
	if d.p.PerMessage {
		k, err := d.kr.GenerateDataKey(ctx)
		if err != nil {
			return nil, 0, err
		}
		telemetry.DataKeyGenerated(ctx, telemetry.KeyPerMessage)
		return k, 0, nil
	}
	// A message that alone exceeds a reuse limit never fits under any key: a fault of
	// the message, not an outage to wait for.
	if size > d.p.MaxBytes {
		return nil, 0, fault.Mark(fmt.Errorf("keyring: message of %d bytes is larger than ReusePolicy.MaxBytes (%d)", n, d.p.MaxBytes), fault.Message)
	}
	if uses > d.p.MaxMessages {
		return nil, 0, fault.Mark(fmt.Errorf("keyring: %d uses of one key are more than ReusePolicy.MaxMessages (%d)", count, d.p.MaxMessages), fault.Message)
	}
	d.mu.Lock()
	for {
		if c := d.cur; c != nil && d.fits(c, uses, size) {
			seq := c.uses
			c.uses += uses
			c.bytes += size
			d.mu.Unlock()
			return c.key, seq, nil
		}
		f := d.pending
		if f == nil {
			f = d.generate(ctx, d.replaced(d.cur, uses, size))
		}
		d.mu.Unlock()
		select {
		case <-f.done:
		case <-ctx.Done():
			return nil, 0, ctx.Err()
		}
		if f.err != nil {
			return nil, 0, f.err
		}
		d.mu.Lock()
		// A caller that waited for a new key may use it even if MaxAge is shorter than
		// the key service took to answer; otherwise it would ask for keys forever.
		if c := f.cur; c != nil && d.cur == c && c.uses+uses <= d.p.MaxMessages && c.bytes+size <= d.p.MaxBytes {
			seq := c.uses
			c.uses += uses
			c.bytes += size
			d.mu.Unlock()
			return c.key, seq, nil
		}
	}
}

// replaced says why c, the current key (nil: none), does not serve uses more uses for
// size bytes: the reason the next key is generated, for telemetry.
func (d *DataKeys) replaced(c *current, uses, size uint64) telemetry.KeyReason {
	switch {
	case c == nil:
		return telemetry.KeyFirst
	case c.uses+uses > d.p.MaxMessages:
		return telemetry.KeyMessages
	case c.bytes+size > d.p.MaxBytes:
		return telemetry.KeyBytes
	}
	return telemetry.KeyAge
}

func (d *DataKeys) fits(c *current, uses, size uint64) bool {
	return c.uses+uses <= d.p.MaxMessages &&
		c.bytes+size <= d.p.MaxBytes &&
		d.now().Sub(c.created) < d.p.MaxAge
}

// generate starts the one GenerateDataKey call that all callers in need of a key wait for.
// It runs detached from the caller's cancellation, so that one caller giving up does not
// fail the others; the keyring's own timeout bounds it. d.mu must be held.
func (d *DataKeys) generate(ctx context.Context, why telemetry.KeyReason) *flight {
	f := &flight{done: make(chan struct{})}
	d.pending = f
	ctx = context.WithoutCancel(ctx)
	epoch := d.epoch
	go func() {
		created := d.now()
		k, err := d.kr.GenerateDataKey(ctx)
		if err == nil && k == nil {
			err = errors.New("keyring: GenerateDataKey returned no key")
		}
		if err == nil {
			telemetry.DataKeyGenerated(ctx, why)
		}
		d.mu.Lock()
		if err == nil && epoch == d.epoch {
			d.cur = &current{key: k, created: created}
			f.cur = d.cur
		}
		f.err = err
		if d.pending == f {
			d.pending = nil
		}
		d.mu.Unlock()
		close(f.done)
	}()
	return f
}

// Expire drops the current data key; the next Take generates a new one. A send side calls
// it after rotating the key-encryption key, or to stop using a key it suspects. A key
// being generated while Expire runs is discarded too.
func (d *DataKeys) Expire() {
	d.mu.Lock()
	d.cur = nil
	d.pending = nil
	d.epoch++
	d.mu.Unlock()
}
