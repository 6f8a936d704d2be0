package codec_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"gocloud.dev/pubsub"

	"github.com/pubcrypt/pubcrypt/fault"
	"github.com/pubcrypt/pubcrypt/internal/codec"
	"github.com/pubcrypt/pubcrypt/internal/devvault"
	"github.com/pubcrypt/pubcrypt/internal/envelope"
	"github.com/pubcrypt/pubcrypt/internal/fields"
	"github.com/pubcrypt/pubcrypt/keyring"
)

var vaultServer *devvault.Server

// TestMain starts the real Vault dev server the codec is tested against.
func TestMain(m *testing.M) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	srv, err := devvault.Start(ctx, devvault.Options{Keys: []string{keyring.DefaultKey}})
	if err == nil {
		err = srv.CreateFieldKeys(ctx, keyring.DefaultDeterministicKey, keyring.DefaultFPEKey)
	}
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "FAIL: cannot start the Vault dev server these tests need:", err)
		if srv != nil {
			_ = srv.Stop()
		}
		os.Exit(1)
	}
	vaultServer = srv
	code := m.Run()
	_ = srv.Stop()
	os.Exit(code)
}

func newVault(t *testing.T) *keyring.Vault {
	t.Helper()
	c, err := vaultServer.Client()
	if err != nil {
		t.Fatal(err)
	}
	v, err := keyring.NewVault(keyring.VaultOptions{Client: c, Key: keyring.DefaultKey})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

var keys = fields.Keys{Transit: keyring.DefaultKey, Deterministic: keyring.DefaultDeterministicKey, FPE: keyring.DefaultFPEKey}

func purchase(i int) []byte {
	return fmt.Appendf(nil, `{"id":"ord-%d","name":"Customer %d","card_number":"4111-1111-1111-1111","sku":"SP-%d","note":"n%d"}`, i, i, i%3, i)
}

// TestSealOpenBatch: a batch mixing whole-body messages, messages under the default
// field policy and messages with a per-message policy, sealed together and opened
// together, comes back byte-equal with the producer's metadata; the field-level batch
// costs one Vault call per key on each side.
func TestSealOpenBatch(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	policy, err := fields.ParsePolicy("name=transit,card_number=fpe(bin,luhn),sku=deterministic")
	if err != nil {
		t.Fatal(err)
	}
	send, recv := newVault(t), newVault(t)
	s, err := codec.NewSealer(codec.SealOptions{Keyring: send, Fields: policy, FieldKeys: keys})
	if err != nil {
		t.Fatal(err)
	}
	o, err := codec.NewOpener(codec.OpenOptions{Keyring: recv})
	if err != nil {
		t.Fatal(err)
	}
	const n = 30
	msgs := make([]*pubsub.Message, n)
	for i := range msgs {
		md := map[string]string{"seq": fmt.Sprint(i)}
		switch i % 3 {
		case 1:
			md[codec.ProtectKey] = "" // an empty per-message policy: the whole body
		case 2:
			md[codec.ProtectKey] = "note=envelope"
		}
		msgs[i] = &pubsub.Message{Body: purchase(i), Metadata: md}
	}
	out, errs, err := s.Seal(ctx, msgs, nil)
	if err != nil || errs != nil {
		t.Fatalf("Seal: %v %v", err, errs)
	}
	for i, m := range out {
		if i%3 != 2 && bytes.Contains(m.Body, fmt.Appendf(nil, "Customer %d\"", i)) {
			t.Fatalf("message %d: the name is in clear on the wire", i)
		}
		if i%3 == 2 && bytes.Contains(m.Body, fmt.Appendf(nil, "\"n%d\"", i)) {
			t.Fatalf("message %d: the note is in clear on the wire", i)
		}
		if _, ok := m.Metadata[codec.ProtectKey]; ok {
			t.Fatalf("message %d: the per-message policy entry is sent", i)
		}
	}
	if !bytes.Equal(msgs[0].Body, purchase(0)) {
		t.Fatal("Seal modified its input")
	}
	sendCalls := send.Calls()
	infos, oerrs := o.OpenBatch(ctx, out)
	for i, m := range out {
		if oerrs[i] != nil {
			t.Fatalf("message %d: %v", i, oerrs[i])
		}
		if !bytes.Equal(m.Body, purchase(i)) || m.Metadata["seq"] != fmt.Sprint(i) || len(m.Metadata) != 1 {
			t.Fatalf("message %d: %s %v", i, m.Body, m.Metadata)
		}
		wantFields := i%3 != 1
		if !infos[i].Encrypted || infos[i].Fields != wantFields || infos[i].KeyID != keyring.DefaultKey || infos[i].KeyVersion != 1 {
			t.Fatalf("message %d: info %+v", i, infos[i])
		}
	}
	t.Logf("%d messages in one batch: %d Vault calls to seal, %d to open", n, sendCalls, recv.Calls())
	// Whatever the batch size: a data key, the FPE key (its version looked up, then
	// derived), one transit and one deterministic batch call per side.
	if sendCalls > 5 || recv.Calls() > 5 {
		t.Fatalf("Vault calls: seal %d, open %d; want ≤ 5 each for one batch", sendCalls, recv.Calls())
	}
}

// TestSealBlamesOnlyTheMessagesAtFault: a nil message, a body that is not JSON under a
// field policy and a card number given as a JSON number fail alone, each as a fault of
// the message; nothing of the batch is handed out.
func TestSealBlamesOnlyTheMessagesAtFault(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	policy, err := fields.ParsePolicy("name=transit,card_number=fpe(bin,luhn)")
	if err != nil {
		t.Fatal(err)
	}
	s, err := codec.NewSealer(codec.SealOptions{Keyring: newVault(t), Fields: policy, FieldKeys: keys})
	if err != nil {
		t.Fatal(err)
	}
	msgs := []*pubsub.Message{
		{Body: purchase(0)},
		nil,
		{Body: []byte("not json")},
		{Body: []byte(`{"name":"A","card_number":4111111111111111}`)},
		{Body: purchase(4)},
	}
	out, errs, err := s.Seal(ctx, msgs, nil)
	if err != nil || out != nil || errs == nil {
		t.Fatalf("Seal: out %v, errs %v, err %v; want per-message errors only", out, errs, err)
	}
	for i, e := range errs {
		atFault := i >= 1 && i <= 3
		if (e != nil) != atFault || (e != nil && fault.ClassOf(e) != fault.Message) {
			t.Errorf("message %d: %v (class %v), want an error: %t", i, e, fault.ClassOf(e), atFault)
		}
	}
	if !errors.Is(errs[1], codec.ErrNilMessage) {
		t.Errorf("nil message: %v", errs[1])
	}
}

// TestOpenBatchOneTampered: one tampered message of a batch fails alone, as a fault of
// the message, and is left as received; the others open.
func TestOpenBatchOneTampered(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	kr := newVault(t)
	s, err := codec.NewSealer(codec.SealOptions{Keyring: kr, FieldKeys: keys})
	if err != nil {
		t.Fatal(err)
	}
	o, err := codec.NewOpener(codec.OpenOptions{Keyring: kr})
	if err != nil {
		t.Fatal(err)
	}
	var msgs []*pubsub.Message
	for i := range 5 {
		msgs = append(msgs, &pubsub.Message{Body: purchase(i)})
	}
	out, errs, err := s.Seal(ctx, msgs, nil)
	if err != nil || errs != nil {
		t.Fatalf("Seal: %v %v", err, errs)
	}
	out[2].Body[3] ^= 1
	raw := bytes.Clone(out[2].Body)
	_, oerrs := o.OpenBatch(ctx, out)
	for i := range out {
		switch {
		case i == 2 && (!errors.Is(oerrs[i], envelope.ErrAuth) || fault.ClassOf(oerrs[i]) != fault.Message || !bytes.Equal(out[i].Body, raw)):
			t.Fatalf("tampered message: %v, body changed: %t", oerrs[i], !bytes.Equal(out[i].Body, raw))
		case i != 2 && (oerrs[i] != nil || !bytes.Equal(out[i].Body, purchase(i))):
			t.Fatalf("message %d: %v", i, oerrs[i])
		}
	}
}

// TestSealUnmatched: under a field policy, a JSON body whose top-level value is not an
// object (an array, a string) is encrypted whole by default and opens byte-equal; with
// unmatched=refuse it is a fault of the message alone; with unmatched=clear it is sent
// readable, authenticated, because the policy says so. An object body next to them is
// field-protected as before.
func TestSealUnmatched(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	kr := newVault(t)
	o, err := codec.NewOpener(codec.OpenOptions{Keyring: kr})
	if err != nil {
		t.Fatal(err)
	}
	bodies := [][]byte{[]byte(`["CANARY-1",{"name":"CANARY-2"}]`), []byte(` "CANARY-3" `), []byte(`{"name":"CANARY-4","id":1}`)}
	for _, tc := range []struct {
		policy string
		want   string // for the first two bodies: body, refuse or clear
	}{
		{"name=transit", "body"},
		{"default=envelope;keep=id", "body"},
		{"default=envelope;keep=id;unmatched=refuse", "refuse"},
		{"name=transit;unmatched=clear", "clear"},
	} {
		p, err := fields.ParsePolicy(tc.policy)
		if err != nil {
			t.Fatal(err)
		}
		s, err := codec.NewSealer(codec.SealOptions{Keyring: kr, Fields: p, FieldKeys: keys})
		if err != nil {
			t.Fatal(err)
		}
		var msgs []*pubsub.Message
		for _, b := range bodies {
			msgs = append(msgs, &pubsub.Message{Body: bytes.Clone(b), Metadata: map[string]string{"k": "v"}})
		}
		out, errs, err := s.Seal(ctx, msgs, nil)
		if err != nil {
			t.Fatalf("%s: %v", tc.policy, err)
		}
		if tc.want == "refuse" {
			for i, e := range errs {
				if refused := i < 2; refused != errors.Is(e, fields.ErrUnmatched) || refused && fault.ClassOf(e) != fault.Message {
					t.Errorf("%s: message %d: %v", tc.policy, i, e)
				}
			}
			if out != nil {
				t.Errorf("%s: messages handed out with a refused one in the batch", tc.policy)
			}
			continue
		}
		if errs != nil {
			t.Fatalf("%s: %v", tc.policy, errs)
		}
		for i, m := range out {
			isFields := fields.IsFields(m.Metadata)
			switch {
			case i == 2 && (!isFields || bytes.Contains(m.Body, []byte("CANARY"))):
				t.Errorf("%s: the object body: fields %t, %s", tc.policy, isFields, m.Body)
			case i < 2 && tc.want == "body" && (isFields || bytes.Contains(m.Body, []byte("CANARY"))):
				t.Errorf("%s: message %d not encrypted whole: %s %v", tc.policy, i, m.Body, m.Metadata)
			case i < 2 && tc.want == "clear" && (!isFields || !bytes.Equal(m.Body, bodies[i])):
				t.Errorf("%s: message %d not sent readable: %s", tc.policy, i, m.Body)
			}
		}
		infos, oerrs := o.OpenBatch(ctx, out)
		for i, m := range out {
			if oerrs[i] != nil || !bytes.Equal(m.Body, bodies[i]) || m.Metadata["k"] != "v" || len(m.Metadata) != 1 {
				t.Errorf("%s: message %d opens as %s %v: %v", tc.policy, i, m.Body, m.Metadata, oerrs[i])
			}
			if wantFields := i == 2 || tc.want == "clear"; infos[i].Fields != wantFields {
				t.Errorf("%s: message %d: info %+v", tc.policy, i, infos[i])
			}
		}
	}
}
