package cryptsub_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"

	"gocloud.dev/pubsub"
	"gocloud.dev/pubsub/mempubsub"

	"github.com/pubcrypt/pubcrypt/cryptsub"
	"github.com/pubcrypt/pubcrypt/crypttopic"
	"github.com/pubcrypt/pubcrypt/keyring"
)

// TestKeyVersion: Info.KeyVersion is the version of the Vault key that wrapped the data
// key, for whole-body and field-level messages alike, through Decrypt and ReceiveBatch,
// across a rotation (real Vault). It comes from the keyring that unwrapped the key:
// a field-level message that was tampered with still reports it (its data key did
// unwrap), while one whose wrapped key claims version -3 reports 0 (nothing unwrapped
// it) and fails as an invalid wrapped key.
func TestKeyVersion(t *testing.T) {
	const key = "pubcrypt-version"
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := vaultServer.CreateKey(ctx, key); err != nil {
		t.Fatal(err)
	}
	newKeyring := func() *keyring.Vault {
		c, err := vaultServer.Client()
		if err != nil {
			t.Fatal(err)
		}
		kr, err := keyring.NewVault(keyring.VaultOptions{Client: c, Key: key})
		if err != nil {
			t.Fatal(err)
		}
		return kr
	}

	// Send a whole-body and a field-level message under version 1, rotate, and again.
	mt := mempubsub.NewTopic()
	raw := mempubsub.NewSubscription(mt, time.Minute)
	defer raw.Shutdown(ctx)
	policy, err := crypttopic.ParseFieldPolicy("name=envelope")
	if err != nil {
		t.Fatal(err)
	}
	kr := newKeyring()
	perMessage := keyring.ReusePolicy{PerMessage: true} // a new data key, under the latest version
	body, err := crypttopic.New(mt, crypttopic.Options{Keyring: kr, Reuse: perMessage})
	if err != nil {
		t.Fatal(err)
	}
	flds, err := crypttopic.New(mt, crypttopic.Options{Keyring: kr, Reuse: perMessage, Fields: policy})
	if err != nil {
		t.Fatal(err)
	}
	for v := 1; v <= 2; v++ {
		if v == 2 {
			if err := vaultServer.RotateKey(ctx, key); err != nil {
				t.Fatal(err)
			}
		}
		for _, top := range []*crypttopic.Topic{body, flds} {
			m := &pubsub.Message{Body: []byte(`{"name":"Ada"}`), Metadata: map[string]string{"v": fmt.Sprint(v)}}
			if err := top.Send(ctx, m); err != nil {
				t.Fatal(err)
			}
		}
	}

	type want struct {
		version  int
		fields   bool
		wantErr  error // nil: decrypts
		original *pubsub.Message
	}
	var cases []want
	for range 4 {
		m, err := raw.Receive(ctx)
		if err != nil {
			t.Fatal(err)
		}
		m.Ack()
		v := int(m.Metadata["v"][0] - '0')
		_, isFields := m.Metadata["pubcrypt-fields"]
		cases = append(cases, want{version: v, fields: isFields, original: &pubsub.Message{Body: m.Body, Metadata: m.Metadata}})
	}
	originals := cases
	for _, c := range originals {
		if !c.fields {
			continue
		}
		tampered := clone(c.original)
		tampered.Body[len(tampered.Body)/2] ^= 1
		cases = append(cases, want{version: c.version, fields: true, wantErr: cryptsub.ErrTampered, original: tampered})
		if c.version == 1 {
			neg := clone(c.original)
			w := neg.Metadata["pubcrypt-dek"]
			neg.Metadata["pubcrypt-dek"] = strings.Replace(w, "v1:", "v-3:", 1)
			if neg.Metadata["pubcrypt-dek"] == w {
				t.Fatalf("wrapped key %.12q… has no version 1 to replace", w)
			}
			cases = append(cases, want{version: 0, fields: true, wantErr: keyring.ErrInvalidWrappedKey, original: neg})
		}
	}
	check := func(how string, c want, m *pubsub.Message, info cryptsub.Info, err error) {
		t.Helper()
		what := fmt.Sprintf("%s: v%d fields=%t (want error %v)", how, c.version, c.fields, c.wantErr)
		if info.KeyVersion != c.version || info.Fields != c.fields || !info.Encrypted || info.KeyID != key {
			t.Errorf("%s: info %+v", what, info)
		}
		switch {
		case c.wantErr == nil && err != nil:
			t.Errorf("%s: %v", what, err)
		case c.wantErr == nil && !bytes.Equal(m.Body, []byte(`{"name":"Ada"}`)):
			t.Errorf("%s: decrypted to %q", what, m.Body)
		case c.wantErr != nil && !errors.Is(err, c.wantErr):
			t.Errorf("%s: error %v", what, err)
		}
	}

	// Decrypt, one message at a time, on a subscription of its own (its own key cache).
	ms := mempubsub.NewSubscription(mempubsub.NewTopic(), time.Minute)
	defer ms.Shutdown(ctx)
	one, err := cryptsub.New(ms, cryptsub.Options{Keyring: newKeyring()})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		m := clone(c.original)
		info, err := one.Decrypt(ctx, m)
		check("Decrypt", c, m, info, err)
	}

	// ReceiveBatch, all of them in batches, with a fresh cache again.
	bt := mempubsub.NewTopic()
	bs := mempubsub.NewSubscription(bt, time.Minute)
	defer bs.Shutdown(ctx)
	batch, err := cryptsub.New(bs, cryptsub.Options{Keyring: newKeyring()})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		if err := bt.Send(ctx, clone(c.original)); err != nil {
			t.Fatal(err)
		}
	}
	// Every metadata entry is authenticated, so a message is told from the others by
	// what it is: a failure comes back as delivered, a success by its version and kind.
	which := func(m *pubsub.Message, info cryptsub.Info, err error) (want, bool) {
		for _, c := range cases {
			if err != nil && c.wantErr != nil && bytes.Equal(m.Body, c.original.Body) && maps.Equal(m.Metadata, c.original.Metadata) ||
				err == nil && c.wantErr == nil && m.Metadata["v"] == c.original.Metadata["v"] && info.Fields == c.fields {
				return c, true
			}
		}
		return want{}, false
	}
	for got := 0; got < len(cases); {
		msgs, infos, errs := batch.ReceiveBatch(ctx, len(cases))
		for i, m := range msgs {
			if m == nil {
				t.Fatal(errs[i])
			}
			m.Ack()
			got++
			c, ok := which(m, infos[i], errs[i])
			if !ok {
				t.Errorf("ReceiveBatch: a message that is none of those sent (info %+v, error %v)", infos[i], errs[i])
				continue
			}
			check("ReceiveBatch", c, m, infos[i], errs[i])
		}
	}
}

func clone(m *pubsub.Message) *pubsub.Message {
	return &pubsub.Message{Body: bytes.Clone(m.Body), Metadata: maps.Clone(m.Metadata)}
}
