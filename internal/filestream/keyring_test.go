package filestream

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/pubcrypt/pubcrypt/keyring"
)

// testKeyring is an in-memory Keyring: it generates random data keys and wraps them with
// AES-256-GCM under a local key-encryption key. It counts calls, so that tests can assert
// one key-service call per file on each side. The real Vault keyring is tested in
// package keyring and end to end by the lead's integration tests.
type testKeyring struct {
	kid           string
	kek           cipher.AEAD
	gens, unwraps atomic.Int64
}

func newTestKeyring() *testKeyring {
	kek := make([]byte, 32)
	rand.Read(kek)
	return &testKeyring{kid: "test-kek", kek: newAEAD(kek)}
}

const wrappedPrefix = "test:v1:"

func (k *testKeyring) GenerateDataKey(ctx context.Context) (*keyring.DataKey, error) {
	k.gens.Add(1)
	key := make([]byte, keyring.DataKeySize)
	rand.Read(key)
	nonce := make([]byte, 12)
	rand.Read(nonce)
	wrapped := k.kek.Seal(nonce, nonce, key, []byte(k.kid))
	return &keyring.DataKey{
		Plaintext: key, Wrapped: wrappedPrefix + base64.RawStdEncoding.EncodeToString(wrapped),
		KeyID: k.kid, Version: 1,
	}, nil
}

func (k *testKeyring) UnwrapDataKey(ctx context.Context, keyID, wrapped string) ([]byte, error) {
	k.unwraps.Add(1)
	if keyID != k.kid {
		return nil, &keyring.Error{Op: "unwrap data key", KeyID: keyID, Kind: keyring.ErrKeyNotFound}
	}
	text, ok := strings.CutPrefix(wrapped, wrappedPrefix)
	raw, err := base64.RawStdEncoding.DecodeString(text)
	if !ok || err != nil || len(raw) < 12 {
		return nil, &keyring.Error{Op: "unwrap data key", KeyID: keyID, Kind: keyring.ErrInvalidWrappedKey}
	}
	key, err := k.kek.Open(nil, raw[:12], raw[12:], []byte(k.kid))
	if err != nil {
		return nil, &keyring.Error{Op: "unwrap data key", KeyID: keyID, Kind: keyring.ErrInvalidWrappedKey}
	}
	return key, nil
}

func newAEAD(key []byte) cipher.AEAD {
	block, err := aes.NewCipher(key)
	if err != nil {
		panic(err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		panic(err)
	}
	return aead
}

// msg is one message as a broker would carry it.
type msg struct {
	body []byte
	md   map[string]string
}

func (m msg) clone() msg {
	md := make(map[string]string, len(m.md))
	for k, v := range m.md {
		md[k] = v
	}
	return msg{bytes.Clone(m.body), md}
}

// recorder is a SendFunc that keeps copies of the messages.
type recorder struct {
	mu   sync.Mutex
	msgs []msg
}

func (r *recorder) send(ctx context.Context, body []byte, md map[string]string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, msg{bytes.Clone(body), md})
	return nil
}

// sendBytes sends data as file name and returns the messages.
func sendBytes(t testing.TB, kr keyring.Keyring, name string, data []byte, chunk int) ([]msg, Stats) {
	t.Helper()
	var rec recorder
	st, err := SendReader(context.Background(), kr, name, int64(len(data)), bytes.NewReader(data), rec.send, SendOptions{ChunkSize: chunk})
	if err != nil {
		t.Fatalf("SendReader(%q, %d bytes): %v", name, len(data), err)
	}
	return rec.msgs, st
}

// deliver hands msgs to r in order and returns what Handle returned.
func deliver(t testing.TB, r *Receiver, msgs []msg) (done []*Done, errs []error) {
	t.Helper()
	for _, m := range msgs {
		d, err := r.Handle(context.Background(), m.body, m.md)
		if err != nil {
			var te *TransferError
			if !errors.As(err, &te) {
				t.Fatalf("Handle returned %T, want *TransferError: %v", err, err)
			}
			errs = append(errs, err)
		}
		if d != nil {
			done = append(done, d)
		}
	}
	return done, errs
}

func newReceiver(t testing.TB, kr keyring.Keyring, dir string, opts ReceiveOptions) *Receiver {
	t.Helper()
	r, err := NewReceiver(kr, dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// dirEntries lists dir, sorted, without the Receiver's record of completed transfers
// (transfer IDs only, kept for redeliveries after a restart).
func dirEntries(t testing.TB, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		if e.Name() != journalName {
			names = append(names, e.Name())
		}
	}
	slices.Sort(names)
	return names
}

// testData is size deterministic pseudo-random bytes.
func testData(size int) []byte {
	b := make([]byte, size)
	io.ReadFull(newPRNG(uint64(size)), b)
	return b
}

// prng is a fast deterministic byte source (xorshift64*), for large streams.
type prng struct{ s uint64 }

func newPRNG(seed uint64) *prng { return &prng{seed*0x9e3779b97f4a7c15 + 1} }

func (p *prng) Read(b []byte) (int, error) {
	for i := 0; i < len(b); i += 8 {
		p.s ^= p.s >> 12
		p.s ^= p.s << 25
		p.s ^= p.s >> 27
		v := p.s * 0x2545f4914f6cdd1d
		for j := 0; j < 8 && i+j < len(b); j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return len(b), nil
}

func readFile(t testing.TB, dir, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// noPlaintext fails if a file in dir holds any 32-byte piece of data at a 32-byte
// boundary of it: the partial state must hold ciphertext only.
func noPlaintext(t testing.TB, dir string, data []byte) {
	t.Helper()
	for _, name := range dirEntries(t, dir) {
		b := readFile(t, dir, name)
		for i := 0; i+32 <= len(data); i += 32 {
			if bytes.Contains(b, data[i:i+32]) {
				t.Fatalf("%s holds plaintext (offset %d of the file)", name, i)
			}
		}
	}
}

// newTestLogger logs everything, as text, to w.
func newTestLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}
