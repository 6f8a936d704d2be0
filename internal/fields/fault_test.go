package fields

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/pubcrypt/pubcrypt/fault"
	"github.com/pubcrypt/pubcrypt/internal/envelope"
	"github.com/pubcrypt/pubcrypt/keyring"
)

func TestSentinelClasses(t *testing.T) {
	for _, err := range []error{ErrPolicy, ErrFieldType, ErrManifest, ErrNotJSON} {
		if c := fault.ClassOf(err); c != fault.Message {
			t.Errorf("%v: class %v, want message", err, c)
		}
	}
}

// TestProtectNamesMessagesAtFault: faults of single messages are collected for the whole
// batch into a *BatchError that names exactly those messages, and their values never
// reach the key service; nothing is returned for the others (fail closed), which protect
// once the messages at fault are taken out.
func TestProtectNamesMessagesAtFault(t *testing.T) {
	e := newTestEnv(t)
	p := mustPolicy(t, "name=transit,card_number=fpe")
	good := `{"name":"Ann","card_number":"4111111111111111"}`
	in := []Input{
		{Body: []byte(good), Policy: p},
		{Body: []byte(`{"name":"Bob"`), Policy: p},                                // not JSON
		{Body: []byte(good), Policy: p},                                           //
		{Body: []byte(`{"name":"Cy","card_number":4111111111111111}`), Policy: p}, // a JSON number
		{Body: []byte(good), Policy: p, Metadata: map[string]string{"pubcrypt-x": "1"}},
		{Body: []byte(good), Policy: Policy{{Path: "a b", Mode: Transit}}}, // a per-message policy that is not one
		{Body: []byte(good), Policy: p},
	}
	at := map[int]error{1: ErrNotJSON, 3: ErrFieldType, 4: envelope.ErrInvalidInput, 5: ErrPolicy}
	out, err := e.sealer.Protect(context.Background(), in)
	var be *BatchError
	if !errors.As(err, &be) || out != nil {
		t.Fatalf("Protect = %d outputs, %v; want a *BatchError and nothing", len(out), err)
	}
	if c := fault.ClassOf(err); c != fault.Message {
		t.Errorf("class %v, want message", c)
	}
	if len(be.Errs) != len(in) {
		t.Fatalf("%d errors for %d messages", len(be.Errs), len(in))
	}
	for i, err := range be.Errs {
		want, bad := at[i]
		switch {
		case !bad && err != nil:
			t.Errorf("message %d is not at fault, but: %v", i, err)
		case bad && (!errors.Is(err, want) || fault.ClassOf(err) != fault.Message):
			t.Errorf("message %d: %v (class %v), want %v of class message", i, err, fault.ClassOf(err), want)
		}
	}
	t.Logf("error: %v", err)
	e.vault.mu.Lock()
	calls := strings.Join(e.vault.calls, ", ")
	e.vault.mu.Unlock()
	if !strings.HasSuffix(calls, "encrypt pii 3") || strings.Count(calls, "encrypt") != 1 {
		t.Errorf("key-service calls %q, want the 3 transit values of the good messages only", calls)
	}

	var rest []Input
	for i := range in {
		if at[i] == nil {
			rest = append(rest, in[i])
		}
	}
	if out, err := e.sealer.Protect(context.Background(), rest); err != nil || len(out) != len(rest) {
		t.Fatalf("the others alone: %d outputs, %v", len(out), err)
	}
}

// TestProtectEnvironmentFaultIsNotBatchError: when the key service fails, no message is
// blamed: the error is the environment's, whatever else is wrong in the batch.
func TestProtectEnvironmentFaultIsNotBatchError(t *testing.T) {
	e := newTestEnv(t)
	p := mustPolicy(t, "name=transit")
	in := []Input{{Body: []byte(`{"name":"Ann"}`), Policy: p}, {Body: []byte(`nope`), Policy: p}}
	for _, kind := range []error{keyring.ErrUnavailable, keyring.ErrPermissionDenied, keyring.ErrKeyNotFound} {
		e.vault.failed = &keyring.Error{Op: "encrypt", KeyID: "pii", Kind: kind}
		out, err := e.sealer.Protect(context.Background(), in)
		var be *BatchError
		if out != nil || !errors.Is(err, kind) || errors.As(err, &be) || fault.ClassOf(err) != fault.Environment {
			t.Errorf("%v: Protect = %v, %v (class %v); want the environment fault alone", kind, out, err, fault.ClassOf(err))
		}
	}
}

// TestProtectValueRefused: an item the key service refuses for its value fails its
// message only.
func TestProtectValueRefused(t *testing.T) {
	e := newTestEnv(t)
	refuse := &itemRefuser{fakeVault: e.vault, at: 1}
	s := NewSealer(refuse, e.dk, testKeys, SealerOptions{})
	p := mustPolicy(t, "name=transit")
	in := []Input{{Body: []byte(`{"name":"Ann"}`), Policy: p}, {Body: []byte(`{"name":"Bob"}`), Policy: p}, {Body: []byte(`{"name":"Cy"}`), Policy: p}}
	_, err := s.Protect(context.Background(), in)
	var be *BatchError
	if !errors.As(err, &be) || be.Errs[0] != nil || !errors.Is(be.Errs[1], keyring.ErrValueRefused) || be.Errs[2] != nil {
		t.Fatalf("Protect = %v; want message 1 alone, refused", err)
	}
}

type itemRefuser struct {
	*fakeVault
	at int
}

func (f *itemRefuser) EncryptBatch(ctx context.Context, key string, items []TransitItem) error {
	err := f.fakeVault.EncryptBatch(ctx, key, items)
	if len(items) > f.at {
		items[f.at].Ciphertext = ""
		items[f.at].Err = &keyring.Error{Op: "encrypt", KeyID: key, Kind: keyring.ErrValueRefused}
	}
	return err
}
