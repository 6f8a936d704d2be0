package fields

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"testing"

	"github.com/pubcrypt/pubcrypt/internal/envelope"
	"github.com/pubcrypt/pubcrypt/keyring"
)

// TestOpenBatch opens good, tampered and foreign messages in one batch: each result is
// the one Open gives for that message alone, and the key service sees one DecryptBatch
// per key for the whole batch.
func TestOpenBatch(t *testing.T) {
	e := newTestEnv(t)
	ctx := context.Background()
	p := mustPolicy(t, mixedPolicy)
	in := make([]Input, 10)
	for i := range in {
		in[i] = Input{Body: []byte(purchaseJSON), Metadata: purchaseMeta, Policy: p}
	}
	out, err := e.sealer.Protect(ctx, in)
	if err != nil {
		t.Fatal(err)
	}
	var msgs []Received
	kind := map[int]string{}
	for i, o := range out {
		r := Received{Body: o.Body, Metadata: o.Metadata}
		switch i {
		case 2: // body byte changed
			r.Body = bytes.Clone(o.Body)
			r.Body[len(r.Body)/2] ^= 0x01
			kind[len(msgs)] = "tampered"
		case 5: // another message's body under this one's envelope
			r.Body = out[4].Body
			kind[len(msgs)] = "swapped"
		case 7: // manifest entry removed
			r.Metadata = maps.Clone(o.Metadata)
			delete(r.Metadata, ManifestKey)
			kind[len(msgs)] = "malformed"
		}
		msgs = append(msgs, r)
	}
	// A message that pubcrypt never touched.
	kind[len(msgs)] = "foreign"
	msgs = append(msgs, Received{Body: []byte(purchaseJSON), Metadata: purchaseMeta})

	e.vault.resetCounts()
	res := e.opener.OpenBatch(ctx, msgs)
	if len(res) != len(msgs) {
		t.Fatalf("OpenBatch returned %d results for %d messages", len(res), len(msgs))
	}
	want := []string{"decrypt pii 14", "decrypt pii-det 28", "fpe pii-fpe 1"} // 7 good messages; the FPE key once
	if got := sortedCalls(e.vault); fmt.Sprint(got) != fmt.Sprint(sortedStrings(want)) {
		t.Errorf("OpenBatch calls = %q, want %q", got, want)
	}
	if d := e.vault.decCalls.Load(); d != 2 {
		t.Errorf("OpenBatch of %d messages made %d DecryptBatch calls, want 2", len(msgs), d)
	}

	for i, r := range res {
		body, md, err := e.opener.Open(ctx, msgs[i].Body, msgs[i].Metadata)
		switch kind[i] {
		case "":
			if r.Err != nil {
				t.Fatalf("message %d: %v", i, r.Err)
			}
			if string(r.Body) != purchaseJSON || !maps.Equal(r.Metadata, purchaseMeta) {
				t.Errorf("message %d: got %s %v", i, r.Body, r.Metadata)
			}
			if err != nil || !bytes.Equal(body, r.Body) || !maps.Equal(md, r.Metadata) {
				t.Errorf("message %d: OpenBatch and Open disagree (%v)", i, err)
			}
		case "tampered", "swapped":
			if !errors.Is(r.Err, envelope.ErrAuth) || r.Body != nil || r.Metadata != nil {
				t.Errorf("message %d (%s): %v, want ErrAuth and no body", i, kind[i], r.Err)
			}
		case "malformed", "foreign":
			if !errors.Is(r.Err, envelope.ErrMalformed) || r.Body != nil {
				t.Errorf("message %d (%s): %v, want ErrMalformed", i, kind[i], r.Err)
			}
		}
		if kind[i] != "" && (err == nil || err.Error() != r.Err.Error()) {
			t.Errorf("message %d (%s): OpenBatch error %v, Open error %v", i, kind[i], r.Err, err)
		}
	}
	// The inputs are left as they were.
	if !maps.Equal(msgs[0].Metadata, out[0].Metadata) {
		t.Error("OpenBatch modified a message's metadata")
	}
	if got := e.opener.OpenBatch(ctx, nil); len(got) != 0 {
		t.Errorf("OpenBatch(nil) = %v", got)
	}
}

// itemDecryptFailer fails the DecryptBatch items whose ciphertext is in bad.
type itemDecryptFailer struct {
	*fakeVault
	bad map[string]bool
}

func (f *itemDecryptFailer) DecryptBatch(ctx context.Context, key string, items []TransitItem) error {
	err := f.fakeVault.DecryptBatch(ctx, key, items)
	for i := range items {
		if f.bad[items[i].Ciphertext] {
			items[i].Plaintext, items[i].Err = nil, &keyring.Error{Op: "decrypt", KeyID: key, Kind: keyring.ErrPermissionDenied}
		}
	}
	return err
}

// TestOpenBatchItemFailure: an item the key service refuses fails only its message; a
// call that fails as a whole fails every message with items in it.
func TestOpenBatchItemFailure(t *testing.T) {
	e := newTestEnv(t)
	ctx := context.Background()
	p := mustPolicy(t, "name=transit,address=envelope")
	pEnv := mustPolicy(t, "name=envelope")
	in := []Input{
		{Body: []byte(purchaseJSON), Policy: p},
		{Body: []byte(purchaseJSON), Policy: p},
		{Body: []byte(purchaseJSON), Policy: pEnv},
		{Body: []byte(purchaseJSON), Policy: p},
	}
	out, err := e.sealer.Protect(ctx, in)
	if err != nil {
		t.Fatal(err)
	}
	msgs := make([]Received, len(out))
	for i, o := range out {
		msgs[i] = Received{Body: o.Body, Metadata: o.Metadata}
	}
	// The name ciphertext of message 1.
	r, err := parseReceived(out[1].Metadata, nil)
	if err != nil {
		t.Fatal(err)
	}
	ms, err := locate(out[1].Body, r.m.c)
	if err != nil || len(ms) == 0 {
		t.Fatal(err)
	}
	var ct string
	for _, mt := range ms {
		if mt.path == "name" {
			ct, _ = unquotePlain(out[1].Body[mt.start:mt.end])
		}
	}
	if !strings.HasPrefix(ct, "vault:") {
		t.Fatalf("name ciphertext %q", ct)
	}
	f := &itemDecryptFailer{fakeVault: e.vault, bad: map[string]bool{ct: true}}
	o := NewOpener(f, keyring.NewUnwrapCache(e.kms, keyring.CacheOptions{}))
	e.vault.resetCounts()
	res := o.OpenBatch(ctx, msgs)
	if d := e.vault.decCalls.Load(); d != 1 {
		t.Errorf("%d DecryptBatch calls, want 1", d)
	}
	for i, r := range res {
		if i == 1 {
			if !errors.Is(r.Err, keyring.ErrPermissionDenied) || r.Body != nil || !strings.Contains(r.Err.Error(), `field "name"`) {
				t.Errorf("refused item: message 1: %v", r.Err)
			}
			continue
		}
		if r.Err != nil || string(r.Body) != purchaseJSON {
			t.Errorf("message %d: %v %s", i, r.Err, r.Body)
		}
	}

	// The whole call fails: the envelope-only message still opens.
	e.vault.failed = &keyring.Error{Op: "decrypt", KeyID: "pii", Kind: keyring.ErrUnavailable}
	res = e.opener.OpenBatch(ctx, msgs)
	e.vault.failed = nil
	for i, r := range res {
		if i == 2 {
			if r.Err != nil || string(r.Body) != purchaseJSON {
				t.Errorf("envelope-only message: %v", r.Err)
			}
			continue
		}
		if !errors.Is(r.Err, keyring.ErrUnavailable) || r.Body != nil {
			t.Errorf("key service down: message %d: %v", i, r.Err)
		}
	}
}
