package filestream

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pubcrypt/pubcrypt/fault"
	"github.com/pubcrypt/pubcrypt/keyring"
)

// TestRedelivery: a chunk delivered again with the same bytes is accepted and ignored,
// in order as out of order: brokers deliver at least once. Only a chunk that does not
// authenticate at that index is refused (TestTamper).
func TestRedelivery(t *testing.T) {
	kr := newTestKeyring()
	data := testData(1000)
	msgs, st := sendBytes(t, kr, "f", data, 100) // 11 messages
	for name, seq := range map[string][]msg{
		"middle chunk twice":       slices.Insert(slices.Clone(msgs), 3, msgs[2]),
		"chunk before the last":    slices.Insert(slices.Clone(msgs), 10, msgs[9]),
		"header again":             slices.Insert(slices.Clone(msgs), 4, msgs[0]),
		"from an earlier position": append(slices.Clone(msgs[:7]), msgs[2:]...),
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			r := newReceiver(t, kr, dir, ReceiveOptions{})
			done, errs := deliver(t, r, seq)
			onlyAlreadyReceived(t, errs) // none but after the completion
			expectReceived(t, dir, "f", data, done, st.TransferID)
		})
	}
}

// TestResume: a Receiver started on the directory of one that stopped (Close, or a
// crash) goes on with the transfer from its partial state: the broker delivers again
// from its committed position, which lags what was stored.
func TestResume(t *testing.T) {
	kr := newTestKeyring()
	data := testData(2000)
	msgs, st := sendBytes(t, kr, "f.bin", data, 100) // 21 messages

	// first stores msgs[:n] in a new directory and stops, as if killed.
	first := func(t *testing.T, n int, opts ReceiveOptions) string {
		dir := t.TempDir()
		r, err := NewReceiver(kr, dir, opts)
		if err != nil {
			t.Fatal(err)
		}
		if done, errs := deliver(t, r, msgs[:n]); len(done)+len(errs) != 0 {
			t.Fatalf("done %v, errors %v", done, errs)
		}
		r.Close()
		noPlaintext(t, dir, data)
		return dir
	}
	spool := func(dir string) string { return filepath.Join(dir, partialPrefix+st.TransferID) }

	for _, from := range []int{0, 3, 8, 9} { // the broker's position at the restart
		t.Run("redelivered from message "+string(rune('0'+from)), func(t *testing.T) {
			dir := first(t, 9, ReceiveOptions{})
			r := newReceiver(t, kr, dir, ReceiveOptions{})
			if ps := r.Partials(); len(ps) != 1 || ps[0].TransferID != st.TransferID || ps[0].Chunks != 9 || ps[0].Total != 0 {
				t.Fatalf("partials %+v", ps)
			}
			unwraps := kr.unwraps.Load()
			done, errs := deliver(t, r, msgs[from:])
			if len(errs) != 0 {
				t.Fatal(errs)
			}
			expectReceived(t, dir, "f.bin", data, done, st.TransferID)
			if got := kr.unwraps.Load() - unwraps; got != 1 {
				t.Errorf("%d unwrap calls, want 1: the data key is unwrapped again, never stored", got)
			}
		})
	}
	t.Run("unordered", func(t *testing.T) {
		dir := t.TempDir()
		r, _ := NewReceiver(kr, dir, ReceiveOptions{Unordered: true})
		mixed := shuffled(msgs, 11)
		deliver(t, r, mixed[:12])
		r.Close()
		noPlaintext(t, dir, data)
		r2 := newReceiver(t, kr, dir, ReceiveOptions{Unordered: true})
		done, errs := deliver(t, r2, shuffled(msgs, 12))
		onlyAlreadyReceived(t, errs)
		expectReceived(t, dir, "f.bin", data, done, st.TransferID)
	})
	t.Run("torn last record", func(t *testing.T) {
		dir := first(t, 9, ReceiveOptions{})
		// A crash in the middle of storing chunk 9: half its record is on disk.
		rec := appendRecordHeader(nil, 9, false, len(msgs[9].body))
		rec = append(rec, msgs[9].body[:50]...)
		appendTo(t, spool(dir), rec)
		r := newReceiver(t, kr, dir, ReceiveOptions{})
		done, errs := deliver(t, r, msgs[5:])
		if len(errs) != 0 {
			t.Fatal(errs)
		}
		expectReceived(t, dir, "f.bin", data, done, st.TransferID)
	})
	t.Run("complete but not installed", func(t *testing.T) {
		// A crash while the complete file was being assembled (in an unnamed file, gone
		// with the process): every chunk is in the partial state. Resume installs it.
		dir := first(t, 20, ReceiveOptions{})
		last := msgs[20]
		appendTo(t, spool(dir), append(appendRecordHeader(nil, 20, true, len(last.body)), last.body...))
		r := newReceiver(t, kr, dir, ReceiveOptions{})
		if ps := r.Partials(); len(ps) != 1 || ps[0].Chunks != 21 || ps[0].Total != 21 {
			t.Fatalf("partials %+v", ps)
		}
		done, err := r.Resume(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		expectReceived(t, dir, "f.bin", data, done, st.TransferID)
		// The broker delivers the last chunks again: the transfer is known as completed,
		// and so it is for the next Receiver (the record of completed transfers).
		_, errs := deliver(t, r, msgs[18:])
		onlyAlreadyReceived(t, errs)
		r.Close()
		r2 := newReceiver(t, kr, dir, ReceiveOptions{})
		_, errs = deliver(t, r2, msgs[18:])
		if len(errs) != 3 {
			t.Fatalf("errors %v, want 3 ErrAlreadyReceived", errs)
		}
		onlyAlreadyReceived(t, errs)
	})
	t.Run("installed but partial state not removed", func(t *testing.T) {
		// A crash between linking the file into place and removing the partial state
		// (and recording the completion): what is at the name is this transfer's file.
		dir := first(t, 20, ReceiveOptions{})
		last := msgs[20]
		appendTo(t, spool(dir), append(appendRecordHeader(nil, 20, true, len(last.body)), last.body...))
		saved, err := os.ReadFile(spool(dir))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "f.bin"), data, 0o600); err != nil {
			t.Fatal(err)
		}
		r := newReceiver(t, kr, dir, ReceiveOptions{})
		done, err := r.Resume(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		expectReceived(t, dir, "f.bin", data, done, st.TransferID)
		r.Close()
		// Another file at the name: refused, left alone.
		os.Remove(filepath.Join(dir, journalName))
		os.WriteFile(spool(dir), saved, 0o600)
		os.WriteFile(filepath.Join(dir, "f.bin"), []byte("precious"), 0o600)
		r2 := newReceiver(t, kr, dir, ReceiveOptions{})
		done, err = r2.Resume(context.Background())
		if len(done) != 0 || !errors.Is(err, ErrExists) || fault.ClassOf(err) != fault.Message {
			t.Fatalf("done %v, err %v; want ErrExists", done, err)
		}
		if !bytes.Equal(readFile(t, dir, "f.bin"), []byte("precious")) || len(dirEntries(t, dir)) != 1 {
			t.Fatalf("destination holds %q", dirEntries(t, dir))
		}
	})
	t.Run("key service down at resume", func(t *testing.T) {
		dir := first(t, 20, ReceiveOptions{})
		last := msgs[20]
		appendTo(t, spool(dir), append(appendRecordHeader(nil, 20, true, len(last.body)), last.body...))
		down := &downKeyring{kr}
		r, err := NewReceiver(down, dir, ReceiveOptions{})
		if err != nil {
			t.Fatal(err)
		}
		done, err := r.Resume(context.Background())
		if len(done) != 0 || !errors.Is(err, keyring.ErrUnavailable) || fault.ClassOf(err) != fault.Environment {
			t.Fatalf("done %v, err %v; want the keyring's outage", done, err)
		}
		// A chunk of it meanwhile: not handled, not lost.
		if _, err := r.Handle(context.Background(), msgs[20].body, msgs[20].md); !errors.Is(err, keyring.ErrUnavailable) {
			t.Fatalf("Handle: %v", err)
		}
		r.Close()
		r2 := newReceiver(t, kr, dir, ReceiveOptions{})
		done, err = r2.Resume(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		expectReceived(t, dir, "f.bin", data, done, st.TransferID)
	})
	t.Run("tampered on disk", func(t *testing.T) {
		// Partial state changed on disk: nothing that does not authenticate is used. A
		// changed record ends the partial state there; the transfer goes on from the
		// chunks before it if the broker delivers the rest again.
		dir := first(t, 9, ReceiveOptions{})
		b, _ := os.ReadFile(spool(dir))
		b[len(b)-10] ^= 1 // in chunk 8
		os.WriteFile(spool(dir), b, 0o600)
		r := newReceiver(t, kr, dir, ReceiveOptions{})
		if _, err := r.Handle(context.Background(), msgs[9].body, msgs[9].md); !errors.Is(err, ErrOrder) {
			t.Fatalf("chunk 9 after chunk 8 was dropped: %v, want ErrOrder", err)
		}
		// The transfer is aborted; sent again from chunk 0, it starts over.
		done, errs := deliver(t, r, msgs)
		if len(errs) != 0 {
			t.Fatal(errs)
		}
		expectReceived(t, dir, "f.bin", data, done, st.TransferID)
	})
}

// downKeyring is a keyring whose service is unreachable.
type downKeyring struct{ keyring.Keyring }

func (downKeyring) UnwrapDataKey(ctx context.Context, keyID, wrapped string) ([]byte, error) {
	return nil, &keyring.Error{Op: "unwrap data key", KeyID: keyID, Kind: keyring.ErrUnavailable, Err: errors.New("connection refused")}
}

func appendTo(t *testing.T, path string, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
}

// TestStartupCleanup: what NewReceiver finds in the directory. Partial state in
// progress is kept; stale partial state, partial plaintext files of older receivers and
// files left in the middle of an assembly are removed.
func TestStartupCleanup(t *testing.T) {
	kr := newTestKeyring()
	data := testData(1000)
	msgs, st := sendBytes(t, kr, "f", data, 100)
	dir := t.TempDir()
	r, _ := NewReceiver(kr, dir, ReceiveOptions{})
	deliver(t, r, msgs[:4])
	r.Close()
	other, ost := sendBytes(t, kr, "g", data, 100)
	r, _ = NewReceiver(kr, dir, ReceiveOptions{})
	deliver(t, r, other[:4])
	r.Close()
	week := time.Now().Add(-8 * 24 * time.Hour)
	os.Chtimes(filepath.Join(dir, partialPrefix+ost.TransferID), week, week)
	leftovers := []string{
		partialPrefix + "0123456789abcdef",        // a partial plaintext file of an older receiver
		partialPrefix + st.TransferID + tmpSuffix, // assembling where O_TMPFILE is missing
		partialPrefix + "probe",
		partialPrefix + "AAAAAAAAAAAAAAAAAAAAAA", // a spool torn as it was created
	}
	for _, name := range leftovers {
		os.WriteFile(filepath.Join(dir, name), data[:300], 0o600)
	}
	os.WriteFile(filepath.Join(dir, "unrelated.txt"), []byte("x"), 0o600)

	var logs bytes.Buffer
	r2 := newReceiver(t, kr, dir, ReceiveOptions{Logger: newTestLogger(&logs)})
	if got := dirEntries(t, dir); !slices.Equal(got, []string{partialPrefix + st.TransferID, "unrelated.txt"}) {
		t.Fatalf("destination holds %q", got)
	}
	if ps := r2.Partials(); len(ps) != 1 || ps[0].TransferID != st.TransferID || ps[0].Chunks != 4 {
		t.Fatalf("partials %+v", ps)
	}
	for _, want := range []string{"stale", "older receiver", ost.TransferID} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log does not say %q:\n%s", want, logs.String())
		}
	}
	if strings.Contains(logs.String(), `"f"`) || strings.Contains(logs.String(), "name=g") {
		t.Errorf("log names a file:\n%s", logs.String())
	}
	done, errs := deliver(t, r2, msgs)
	if len(errs) != 0 || len(done) != 1 {
		t.Fatal(errs)
	}

	t.Run("kept with a negative StaleAfter", func(t *testing.T) {
		dir := t.TempDir()
		r, _ := NewReceiver(kr, dir, ReceiveOptions{})
		deliver(t, r, msgs[:4])
		r.Close()
		old := time.Now().Add(-365 * 24 * time.Hour)
		os.Chtimes(filepath.Join(dir, partialPrefix+st.TransferID), old, old)
		r = newReceiver(t, kr, dir, ReceiveOptions{StaleAfter: -1})
		if len(r.Partials()) != 1 {
			t.Fatal("partial state removed")
		}
	})
	t.Run("one receiver per directory", func(t *testing.T) {
		_, err := NewReceiver(kr, dir, ReceiveOptions{})
		if !errors.Is(err, ErrStorage) || !strings.Contains(err.Error(), "another receiver") {
			t.Fatalf("second receiver: %v", err)
		}
	})
	t.Run("missing directory", func(t *testing.T) {
		_, err := NewReceiver(kr, filepath.Join(dir, "nope"), ReceiveOptions{})
		if !errors.Is(err, ErrStorage) || fault.ClassOf(err) != fault.Environment {
			t.Fatalf("got %v, want ErrStorage", err)
		}
	})
}

// TestFaultClasses: each error kind has the class a consumer decides by.
func TestFaultClasses(t *testing.T) {
	for _, c := range []struct {
		err  error
		want fault.Class
	}{
		{ErrNotChunk, fault.Message}, {ErrMalformed, fault.Message}, {ErrAuth, fault.Message},
		{ErrOrder, fault.Message}, {ErrUnknownTransfer, fault.Message}, {ErrAlreadyReceived, fault.Message},
		{ErrAborted, fault.Message}, {ErrIncomplete, fault.Message}, {ErrUnsafeName, fault.Message},
		{ErrExists, fault.Message}, {ErrSize, fault.Message}, {ErrInvalidInput, fault.Message},
		{ErrStorage, fault.Environment}, {ErrClosed, fault.Environment},
		{&TransferError{ID: "x", Index: 3, Err: malformed("x")}, fault.Message},
		{&TransferError{ID: "x", Index: 3, Err: storage("write", os.ErrPermission)}, fault.Environment},
		{&TransferError{ID: "x", Index: 3, Err: context.Canceled}, fault.Environment},
	} {
		if got := fault.ClassOf(c.err); got != c.want {
			t.Errorf("%v: class %v, want %v", c.err, got, c.want)
		}
	}
	if err := storage("write spool", os.ErrPermission); !errors.Is(err, os.ErrPermission) || !errors.Is(err, ErrStorage) {
		t.Errorf("%v does not wrap both", err)
	}
}
