package codec_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"gocloud.dev/pubsub"

	"github.com/pubcrypt/pubcrypt/fault"
	"github.com/pubcrypt/pubcrypt/internal/codec"
	"github.com/pubcrypt/pubcrypt/internal/envelope"
	"github.com/pubcrypt/pubcrypt/internal/fields"
	"github.com/pubcrypt/pubcrypt/keyring"
)

// dataKeysOnly is a keyring without deterministic encryption (a KMS by URL, say).
type dataKeysOnly struct{ v *keyring.Vault }

func (d dataKeysOnly) GenerateDataKey(ctx context.Context) (*keyring.DataKey, error) {
	return d.v.GenerateDataKey(ctx)
}

func (d dataKeysOnly) UnwrapDataKey(ctx context.Context, keyID, wrapped string) ([]byte, error) {
	return d.v.UnwrapDataKey(ctx, keyID, wrapped)
}

// TestRecordKeyRefusals: what a sealer refuses about record keys, and that its errors name
// the entry and the field but never the key. A protected key needs a key service with
// deterministic encryption (a clear one does not), cannot also be sensitive, and no
// producer may set the flag itself, whether or not a record key is configured.
func TestRecordKeyRefusals(t *testing.T) {
	v := newVault(t)
	for _, c := range []struct {
		name string
		kr   keyring.Keyring
		rk   codec.RecordKey
		sens []string
		ok   bool
	}{
		{"protected", v, codec.RecordKey{Entry: "user", Key: keys.Deterministic}, nil, true},
		{"protected without deterministic encryption", dataKeysOnly{v}, codec.RecordKey{Entry: "user", Key: keys.Deterministic}, nil, false},
		{"clear without deterministic encryption", dataKeysOnly{v}, codec.RecordKey{Entry: "user", Clear: true}, nil, true},
		{"no key name", v, codec.RecordKey{Entry: "user"}, nil, false},
		{"reserved entry", v, codec.RecordKey{Entry: "pubcrypt-user", Key: keys.Deterministic}, nil, false},
		{"sensitive entry", v, codec.RecordKey{Entry: "user", Key: keys.Deterministic}, []string{"user"}, false},
		{"field without entry", v, codec.RecordKey{Field: []string{"id"}, Key: keys.Deterministic}, nil, false},
		{"empty field step", v, codec.RecordKey{Entry: "user", Field: []string{"a", ""}, Key: keys.Deterministic}, nil, false},
	} {
		_, err := codec.NewSealer(codec.SealOptions{Keyring: c.kr, RecordKey: c.rk, SensitiveMetadata: c.sens})
		if (err == nil) != c.ok {
			t.Errorf("%s: NewSealer: %v, want ok %t", c.name, err, c.ok)
		}
	}

	const secret = "secret-customer-9"
	s, err := codec.NewSealer(codec.SealOptions{Keyring: v, RecordKey: codec.RecordKey{Entry: "user", Field: []string{"user", "id"}, Key: keys.Deterministic}})
	if err != nil {
		t.Fatal(err)
	}
	msgs := []*pubsub.Message{
		{Body: []byte(`{"user":{"id":"` + secret + `"}}`)}, // ok
		{Body: []byte(`{"user":{}}`)},                      // no field, no entry
		{Body: []byte(`{"user":{"id":"` + secret + `"}}`), Metadata: map[string]string{"user": "other"}}, // disagree
		{Body: []byte(`{"user":{"id":"x"}}`), Metadata: map[string]string{"pubcrypt-key": "v1;dk=k;e=user"}},
		{Body: []byte(`{"other":1}`), Metadata: map[string]string{"user": secret}}, // the entry alone will do
	}
	_, errs, err := s.Seal(context.Background(), msgs, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []error{nil, codec.ErrRecordKey, codec.ErrRecordKey, envelope.ErrInvalidInput, nil}
	for i, w := range want {
		switch {
		case w == nil && errs[i] != nil:
			t.Errorf("message %d: %v", i, errs[i])
		case w != nil && (!errors.Is(errs[i], w) || !fault.IsMessage(errs[i])):
			t.Errorf("message %d: %v, want %v (a message fault)", i, errs[i], w)
		case errs[i] != nil && strings.Contains(errs[i].Error(), secret):
			t.Errorf("message %d: the error holds the key: %v", i, errs[i])
		}
	}

	// Without a record key configured, the flag is still the sender's alone.
	plain, err := codec.NewSealer(codec.SealOptions{Keyring: v})
	if err != nil {
		t.Fatal(err)
	}
	_, errs, err = plain.Seal(context.Background(), []*pubsub.Message{{Body: []byte("x"), Metadata: map[string]string{"pubcrypt-key": "v1;dk=k;e=user"}}}, nil)
	if err != nil || errs == nil || !errors.Is(errs[0], envelope.ErrInvalidInput) {
		t.Fatalf("a producer's own pubcrypt-key entry: %v %v", errs, err)
	}
}

// TestRecordKeyFieldsAndRotation: a protected record key on field-level messages opens in
// OpenBatch, with one deterministic call for the batch's keys; after the deterministic key
// is rotated, the same plaintext key gives another record key (what FORMAT.md section 3.2
// says of compaction and partitions), and the keys of both versions still open.
func TestRecordKeyFieldsAndRotation(t *testing.T) {
	ctx := context.Background()
	const detKey = "pubcrypt-det-rotated"
	if err := vaultServer.CreateKeyWith(ctx, detKey, map[string]any{"derived": true, "convergent_encryption": true}); err != nil {
		t.Fatal(err)
	}
	policy, err := fields.ParsePolicy("name=transit")
	if err != nil {
		t.Fatal(err)
	}
	producer := newVault(t)
	s, err := codec.NewSealer(codec.SealOptions{Keyring: producer, Fields: policy, FieldKeys: keys, RecordKey: codec.RecordKey{Entry: "user", Key: detKey}})
	if err != nil {
		t.Fatal(err)
	}
	seal := func(n int) []*pubsub.Message {
		var msgs []*pubsub.Message
		for i := range n {
			msgs = append(msgs, &pubsub.Message{Body: fmt.Appendf(nil, `{"name":"Ann","seq":%d}`, i), Metadata: map[string]string{"user": fmt.Sprintf("u%d", i%3)}})
		}
		out, errs, err := s.Seal(ctx, msgs, nil)
		if err != nil || errs != nil {
			t.Fatalf("seal: %v %v", errs, err)
		}
		return out
	}
	before := seal(30)
	if err := vaultServer.RotateKey(ctx, detKey); err != nil {
		t.Fatal(err)
	}
	after := seal(30)
	for i := range 3 {
		b, a := before[i].Metadata["user"], after[i].Metadata["user"]
		if b != before[i+3].Metadata["user"] || a != after[i+3].Metadata["user"] {
			t.Fatalf("u%d: one key version, two record keys", i)
		}
		if b == a || !strings.HasPrefix(b, "vault:v1:") || !strings.HasPrefix(a, "vault:v2:") {
			t.Fatalf("u%d: record keys %.10q... and %.10q... across the rotation", i, b, a)
		}
	}
	consumer := newVault(t)
	o, err := codec.NewOpener(codec.OpenOptions{Keyring: consumer})
	if err != nil {
		t.Fatal(err)
	}
	all := append(before, after...)
	infos, errs := o.OpenBatch(ctx, all)
	for i, m := range all {
		if errs[i] != nil {
			t.Fatalf("message %d: %v", i, errs[i])
		}
		if !infos[i].Fields || infos[i].RecordKey != "user" || m.Metadata["user"] != fmt.Sprintf("u%d", (i%30)%3) || m.Metadata["pubcrypt-key"] != "" {
			t.Fatalf("message %d: info %+v, metadata %v", i, infos[i], m.Metadata)
		}
	}
	// Unwrap, transit fields (up to 4 parallel calls) and one call for the record keys.
	t.Logf("60 field-level messages with protected record keys of 2 key versions opened with %d Vault calls", consumer.Calls())
}
