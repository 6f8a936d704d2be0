package fields

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/pubcrypt/pubcrypt/keyring"
)

// fakeVault is an in-memory stand-in for Vault Transit as keyring.FieldKeyring: AES-GCM
// per key version, derived keys with convergent (deterministic) nonces, FPE keys per
// version, a minimum decryption version per key, and call counters. The real Vault is
// exercised by the lead's integration tests.
type fakeVault struct {
	mu     sync.Mutex
	keys   map[string]*fakeKey
	rand   io.Reader // nonces of randomized encryption; crypto/rand if nil
	failed error     // if set, every batch call fails as a whole

	encCalls, decCalls, fpeCalls atomic.Int64
	calls                        []string // "encrypt key n", "decrypt key n", "fpe key v"
}

type fakeKey struct {
	versions   [][]byte
	derived    bool // convergent: derive from Context, nonce from plaintext
	minDecrypt int
}

func newFakeVault() *fakeVault {
	v := &fakeVault{keys: map[string]*fakeKey{}}
	v.addKey("pii", false)
	v.addKey("pii-det", true)
	v.addKey("pii-fpe", false)
	return v
}

func (v *fakeVault) addKey(name string, derived bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.keys[name] = &fakeKey{derived: derived}
	v.rotateLocked(name)
}

// rotate adds a version to the named key.
func (v *fakeVault) rotate(name string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.rotateLocked(name)
}

func (v *fakeVault) rotateLocked(name string) {
	k := v.keys[name]
	sum := sha256.Sum256([]byte(fmt.Sprintf("fake vault key %s v%d", name, len(k.versions)+1)))
	k.versions = append(k.versions, sum[:])
}

func (v *fakeVault) setMinDecrypt(name string, min int) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.keys[name].minDecrypt = min
}

func (v *fakeVault) key(op, name string) (*fakeKey, error) {
	k, ok := v.keys[name]
	if !ok {
		return nil, &keyring.Error{Op: op, KeyID: name, Kind: keyring.ErrKeyNotFound}
	}
	return k, nil
}

func gcmOf(key []byte) cipher.AEAD {
	b, err := aes.NewCipher(key)
	if err != nil {
		panic(err)
	}
	a, err := cipher.NewGCM(b)
	if err != nil {
		panic(err)
	}
	return a
}

func mac(key []byte, parts ...[]byte) []byte {
	h := hmac.New(sha256.New, key)
	for _, p := range parts {
		h.Write(p)
	}
	return h.Sum(nil)
}

func (v *fakeVault) EncryptBatch(ctx context.Context, name string, items []TransitItem) error {
	v.encCalls.Add(1)
	v.mu.Lock()
	defer v.mu.Unlock()
	v.calls = append(v.calls, fmt.Sprintf("encrypt %s %d", name, len(items)))
	if v.failed != nil {
		return v.failed
	}
	k, err := v.key("encrypt", name)
	if err != nil {
		return err
	}
	ver := len(k.versions)
	for i := range items {
		it := &items[i]
		key := k.versions[ver-1]
		nonce := make([]byte, 12)
		if k.derived {
			if it.Context == nil {
				it.Err = errors.New("missing 'context' for key derivation")
				continue
			}
			key = mac(key, it.Context)
			copy(nonce, mac(key, it.Plaintext))
		} else {
			r := v.rand
			if r == nil {
				r = rand.Reader
			}
			if _, err := io.ReadFull(r, nonce); err != nil {
				return err
			}
		}
		ct := gcmOf(key).Seal(nonce, nonce, it.Plaintext, it.AssociatedData)
		it.Ciphertext = fmt.Sprintf("vault:v%d:%s", ver, base64.StdEncoding.EncodeToString(ct))
	}
	return nil
}

func (v *fakeVault) DecryptBatch(ctx context.Context, name string, items []TransitItem) error {
	v.decCalls.Add(1)
	v.mu.Lock()
	defer v.mu.Unlock()
	v.calls = append(v.calls, fmt.Sprintf("decrypt %s %d", name, len(items)))
	if v.failed != nil {
		return v.failed
	}
	k, err := v.key("decrypt", name)
	if err != nil {
		return err
	}
	for i := range items {
		it := &items[i]
		rest, ok := strings.CutPrefix(it.Ciphertext, "vault:v")
		num, text, ok2 := strings.Cut(rest, ":")
		ver, err := strconv.Atoi(num)
		raw, err2 := base64.StdEncoding.DecodeString(text)
		if !ok || !ok2 || err != nil || err2 != nil || ver < 1 || ver > len(k.versions) || len(raw) < 12 {
			it.Err = &keyring.Error{Op: "decrypt", KeyID: name, Kind: keyring.ErrInvalidWrappedKey}
			continue
		}
		if ver < k.minDecrypt {
			it.Err = &keyring.Error{Op: "decrypt", KeyID: name, Version: ver, Kind: keyring.ErrVersionTooOld}
			continue
		}
		key := k.versions[ver-1]
		if k.derived {
			key = mac(key, it.Context)
		}
		pt, err := gcmOf(key).Open(nil, raw[:12], raw[12:], it.AssociatedData)
		if err != nil {
			it.Err = errors.New("cipher: message authentication failed")
			continue
		}
		it.Plaintext = pt
	}
	return nil
}

func (v *fakeVault) FPEKey(ctx context.Context, name string, version int) ([]byte, int, error) {
	v.fpeCalls.Add(1)
	v.mu.Lock()
	defer v.mu.Unlock()
	v.calls = append(v.calls, fmt.Sprintf("fpe %s %d", name, version))
	if v.failed != nil {
		return nil, 0, v.failed
	}
	k, err := v.key("fpe key", name)
	if err != nil {
		return nil, 0, err
	}
	if version == 0 {
		version = len(k.versions)
	}
	if version > len(k.versions) {
		return nil, 0, &keyring.Error{Op: "fpe key", KeyID: name, Version: version, Kind: keyring.ErrKeyNotFound}
	}
	if version < k.minDecrypt {
		return nil, 0, &keyring.Error{Op: "fpe key", KeyID: name, Version: version, Kind: keyring.ErrVersionTooOld}
	}
	return mac(k.versions[version-1], []byte("fpe")), version, nil
}

func (v *fakeVault) resetCounts() {
	v.encCalls.Store(0)
	v.decCalls.Store(0)
	v.fpeCalls.Store(0)
	v.mu.Lock()
	v.calls = nil
	v.mu.Unlock()
}

// TransitItem is a short name for the tests.
type TransitItem = keyring.TransitItem

// fakeKMS is a keyring.Keyring for data keys: wrapped keys are AES-GCM under a fixed
// key-encryption key, so any fakeKMS unwraps what another wrapped.
type fakeKMS struct {
	gens, unwraps atomic.Int64
}

var kmsKEK = gcmOf(make([]byte, 32))

func (k *fakeKMS) GenerateDataKey(ctx context.Context) (*keyring.DataKey, error) {
	k.gens.Add(1)
	pt := make([]byte, keyring.DataKeySize)
	rand.Read(pt)
	nonce := make([]byte, 12)
	rand.Read(nonce)
	w := "vault:v1:" + base64.StdEncoding.EncodeToString(kmsKEK.Seal(nonce, nonce, pt, nil))
	return &keyring.DataKey{Plaintext: pt, Wrapped: w, KeyID: "orders", Version: 1}, nil
}

func (k *fakeKMS) UnwrapDataKey(ctx context.Context, keyID, wrapped string) ([]byte, error) {
	k.unwraps.Add(1)
	raw, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(wrapped, "vault:v1:"))
	if err != nil || len(raw) < 12 {
		return nil, &keyring.Error{Op: "unwrap data key", KeyID: keyID, Kind: keyring.ErrInvalidWrappedKey}
	}
	pt, err := kmsKEK.Open(nil, raw[:12], raw[12:], nil)
	if err != nil {
		return nil, &keyring.Error{Op: "unwrap data key", KeyID: keyID, Kind: keyring.ErrInvalidWrappedKey}
	}
	return pt, nil
}

// testEnv is a Sealer and an Opener over the fakes.
type testEnv struct {
	vault  *fakeVault
	kms    *fakeKMS
	dk     *keyring.DataKeys
	sealer *Sealer
	opener *Opener
}

var testKeys = Keys{Transit: "pii", Deterministic: "pii-det", FPE: "pii-fpe"}

func newTestEnv(t testing.TB) *testEnv {
	t.Helper()
	e := &testEnv{vault: newFakeVault(), kms: &fakeKMS{}}
	var err error
	if e.dk, err = keyring.NewDataKeys(e.kms, keyring.ReusePolicy{}); err != nil {
		t.Fatal(err)
	}
	e.sealer = NewSealer(e.vault, e.dk, testKeys, SealerOptions{})
	e.opener = NewOpener(e.vault, keyring.NewUnwrapCache(e.kms, keyring.CacheOptions{}))
	return e
}

// protect1 protects one message.
func (e *testEnv) protect1(t testing.TB, body string, md map[string]string, p Policy) Output {
	t.Helper()
	out, err := e.sealer.Protect(context.Background(), []Input{{Body: []byte(body), Metadata: md, Policy: p}})
	if err != nil {
		t.Fatalf("Protect: %v", err)
	}
	return out[0]
}

func mustPolicy(t testing.TB, s string) Policy {
	t.Helper()
	p, err := ParsePolicy(s)
	if err != nil {
		t.Fatalf("ParsePolicy(%q): %v", s, err)
	}
	return p
}
