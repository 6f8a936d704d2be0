package filestream

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/pubcrypt/pubcrypt/fault"
	"github.com/pubcrypt/pubcrypt/keyring"
)

// TestKeyServiceChangedKeepsPartialState: the partial state of a transfer exists only
// because its wrapped data key unwrapped and its chunks authenticated under it. When the
// key service later refuses that same wrapped key as invalid (pointed at another server,
// the transit key deleted and created again), the service changed, not the message: the
// chunk is an environment fault (never acknowledged) and the stored chunks, acknowledged
// long ago, stay. Mended, the transfer finishes without a re-send. Only a key version
// retired on purpose ends it.
func TestKeyServiceChangedKeepsPartialState(t *testing.T) {
	kr := newTestKeyring()
	data := testData(2000)
	msgs, st := sendBytes(t, kr, "f.bin", data, 100) // 21 messages
	dir := t.TempDir()
	r := newReceiver(t, kr, dir, ReceiveOptions{})
	if done, errs := deliver(t, r, msgs[:9]); len(done)+len(errs) != 0 {
		t.Fatalf("done %v, errors %v", done, errs)
	}
	r.Close()
	spool := filepath.Join(dir, partialPrefix+st.TransferID)

	other := newTestKeyring() // same key ID, another key-encryption key: refuses kr's wrapped keys
	r2 := newReceiver(t, other, dir, ReceiveOptions{})
	_, err := r2.Handle(context.Background(), msgs[9].body, msgs[9].md)
	if !errors.Is(err, keyring.ErrInvalidWrappedKey) || fault.ClassOf(err) != fault.Environment {
		t.Fatalf("chunk 9 under a changed key service: %v (class %v), want the keyring's refusal as an environment fault", err, fault.ClassOf(err))
	}
	if _, err := os.Stat(spool); err != nil {
		t.Fatalf("partial state of 9 acknowledged chunks removed: %v", err)
	}
	r2.Close()

	r3 := newReceiver(t, kr, dir, ReceiveOptions{})
	done, errs := deliver(t, r3, msgs[9:])
	if len(errs) != 0 {
		t.Fatal(errs)
	}
	expectReceived(t, dir, "f.bin", data, done, st.TransferID)
}

// retiredKeyring refuses every wrapped key as below min_decryption_version.
type retiredKeyring struct{ keyring.Keyring }

func (retiredKeyring) UnwrapDataKey(ctx context.Context, keyID, wrapped string) ([]byte, error) {
	return nil, &keyring.Error{Op: "unwrap data key", KeyID: keyID, Version: 1, Kind: keyring.ErrVersionTooOld}
}

// TestKeyVersionRetiredEndsPartialState: a key version retired on purpose can never
// unwrap the transfer's data key again: the transfer fails as a fault of the message.
func TestKeyVersionRetiredEndsPartialState(t *testing.T) {
	kr := newTestKeyring()
	msgs, st := sendBytes(t, kr, "f.bin", testData(2000), 100)
	dir := t.TempDir()
	r := newReceiver(t, kr, dir, ReceiveOptions{})
	deliver(t, r, msgs[:9])
	r.Close()
	r2 := newReceiver(t, retiredKeyring{kr}, dir, ReceiveOptions{})
	_, err := r2.Handle(context.Background(), msgs[9].body, msgs[9].md)
	if !errors.Is(err, keyring.ErrVersionTooOld) || fault.ClassOf(err) != fault.Message {
		t.Fatalf("chunk 9 under a retired key version: %v (class %v), want a message fault", err, fault.ClassOf(err))
	}
	if _, err := os.Stat(filepath.Join(dir, partialPrefix+st.TransferID)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("partial state of a transfer that can never complete kept: %v", err)
	}
}
