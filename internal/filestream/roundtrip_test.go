package filestream

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pubcrypt/pubcrypt/internal/wire"
)

func TestRoundTrip(t *testing.T) {
	type tc struct {
		size, chunk int
	}
	var cases []tc
	for _, c := range []int{1, 7, 1000} {
		for _, size := range []int{0, 1, c - 1, c, c + 1, 3*c + 5} {
			if !slices.Contains(cases, tc{size, c}) {
				cases = append(cases, tc{size, c})
			}
		}
	}
	cases = append(cases, tc{5 << 20, 4099}, tc{5 << 20, 64 << 10}, tc{5 << 20, 0})
	for _, c := range cases {
		t.Run(fmt.Sprintf("size=%d/chunk=%d", c.size, c.chunk), func(t *testing.T) {
			kr := newTestKeyring()
			dir := t.TempDir()
			data := testData(c.size)
			const name = "résumé 履歴書 ✓.pdf"
			msgs, st := sendBytes(t, kr, name, data, c.chunk)

			chunk := c.chunk
			if chunk == 0 {
				chunk = DefaultChunkSize
			}
			wantMsgs := 1 + max(1, (c.size+chunk-1)/chunk)
			if len(msgs) != wantMsgs || st.Messages != int64(wantMsgs) || st.Size != int64(c.size) {
				t.Fatalf("sent %d messages (stats %+v), want %d", len(msgs), st, wantMsgs)
			}
			for i, m := range msgs {
				if len(m.md) != 2 || !IsChunk(m.md) {
					t.Fatalf("message %d metadata %q", i, m.md)
				}
				if strings.Contains(m.md[ChunkKey]+m.md[DEKKey], "pdf") || bytes.Contains(m.body, []byte(name)) {
					t.Fatalf("message %d shows the file name", i)
				}
				if len(m.body) > chunk+wire.TagSize && i > 0 {
					t.Fatalf("message %d body %d bytes for chunk size %d", i, len(m.body), chunk)
				}
			}

			var progress []int64
			r := newReceiver(t, kr, dir, ReceiveOptions{Progress: func(n string, got, total int64) {
				if n != name || total != int64(c.size) {
					t.Errorf("progress(%q, %d, %d)", n, got, total)
				}
				progress = append(progress, got)
			}})
			done, errs := deliver(t, r, msgs)
			if len(errs) > 0 {
				t.Fatalf("errors: %v", errs)
			}
			if len(done) != 1 {
				t.Fatalf("got %d Done, want 1", len(done))
			}
			d := done[0]
			if d.Name != name || d.Size != int64(c.size) || d.TransferID != st.TransferID ||
				d.Path != filepath.Join(dir, name) || d.Chunks != int64(wantMsgs) {
				t.Errorf("Done = %+v (stats %+v)", d, st)
			}
			if got := readFile(t, dir, name); !bytes.Equal(got, data) {
				t.Fatalf("received %d bytes differ from the %d sent", len(got), len(data))
			}
			if got := dirEntries(t, dir); !slices.Equal(got, []string{name}) {
				t.Errorf("destination holds %q", got)
			}
			if fi, err := os.Stat(d.Path); err != nil || fi.Mode().Perm() != 0o600 {
				t.Errorf("mode %v, %v; want 0600", fi.Mode(), err)
			}
			if len(progress) != wantMsgs || progress[len(progress)-1] != int64(c.size) {
				t.Errorf("progress %d calls ending at %v", len(progress), progress[len(progress)-1:])
			}
			if g, u := kr.gens.Load(), kr.unwraps.Load(); g != 1 || u != 1 {
				t.Errorf("key service calls: %d generate, %d unwrap; want 1 and 1", g, u)
			}
		})
	}
}

func TestSendFilePreserve(t *testing.T) {
	kr := newTestKeyring()
	src := filepath.Join(t.TempDir(), "report 2026.csv")
	data := testData(10000)
	if err := os.WriteFile(src, data, 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(src, 0o640); err != nil {
		t.Fatal(err)
	}
	mtime := time.Date(2024, 2, 29, 12, 30, 45, 123456789, time.UTC)
	if err := os.Chtimes(src, mtime, mtime); err != nil {
		t.Fatal(err)
	}
	for _, preserve := range []bool{false, true} {
		t.Run(fmt.Sprintf("preserve=%t", preserve), func(t *testing.T) {
			var rec recorder
			var sent []int64
			st, err := SendFile(context.Background(), kr, src, rec.send, SendOptions{
				ChunkSize: 3000, Progress: func(s, total int64) { sent = append(sent, s) },
			})
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(sent, []int64{3000, 6000, 9000, 10000}) || st.Messages != 5 {
				t.Errorf("progress %v, stats %+v", sent, st)
			}
			dir := t.TempDir()
			r := newReceiver(t, kr, dir, ReceiveOptions{Preserve: preserve})
			done, errs := deliver(t, r, rec.msgs)
			if len(errs) > 0 || len(done) != 1 {
				t.Fatalf("done %v, errors %v", done, errs)
			}
			if done[0].Mode != 0o640 || !done[0].ModTime.Equal(mtime) {
				t.Errorf("Done mode %v time %v", done[0].Mode, done[0].ModTime)
			}
			fi, err := os.Stat(filepath.Join(dir, "report 2026.csv"))
			if err != nil {
				t.Fatal(err)
			}
			wantMode, timeKept := fs.FileMode(0o600), false
			if preserve {
				wantMode, timeKept = 0o640, true
			}
			if fi.Mode().Perm() != wantMode || fi.ModTime().Equal(mtime) != timeKept {
				t.Errorf("file mode %v time %v; want mode %v, sender's time %t", fi.Mode(), fi.ModTime(), wantMode, timeKept)
			}
		})
	}
	t.Run("not a regular file", func(t *testing.T) {
		_, err := SendFile(context.Background(), kr, t.TempDir(), (&recorder{}).send, SendOptions{})
		if !errors.Is(err, ErrInvalidInput) {
			t.Fatalf("got %v, want ErrInvalidInput", err)
		}
	})
}

// TestInterleaved: chunks of three transfers arrive interleaved on one receiver.
func TestInterleaved(t *testing.T) {
	kr := newTestKeyring()
	files := map[string][]byte{"a.bin": testData(1000), "b.bin": testData(2500), "c.bin": testData(0)}
	var streams [][]msg
	for _, name := range []string{"a.bin", "b.bin", "c.bin"} {
		msgs, _ := sendBytes(t, kr, name, files[name], 100)
		streams = append(streams, msgs)
	}
	var all []msg
	for i := 0; len(all) < len(streams[0])+len(streams[1])+len(streams[2]); i++ {
		for _, s := range streams {
			if i < len(s) {
				all = append(all, s[i])
			}
		}
	}
	dir := t.TempDir()
	r := newReceiver(t, kr, dir, ReceiveOptions{})
	done, errs := deliver(t, r, all)
	if len(errs) > 0 || len(done) != 3 {
		t.Fatalf("done %d, errors %v", len(done), errs)
	}
	for name, data := range files {
		if !bytes.Equal(readFile(t, dir, name), data) {
			t.Errorf("%s differs", name)
		}
	}
	if got := kr.unwraps.Load(); got != 3 {
		t.Errorf("%d unwrap calls for 3 files", got)
	}
}

// TestConcurrentHandle: several goroutines feed one receiver, each its own transfer in
// order (as one consumer goroutine per partition would). Run with -race.
func TestConcurrentHandle(t *testing.T) {
	kr := newTestKeyring()
	dir := t.TempDir()
	r := newReceiver(t, kr, dir, ReceiveOptions{})
	var wg sync.WaitGroup
	for g := range 8 {
		name := fmt.Sprintf("file-%d", g)
		data := testData(5000 + g)
		msgs, _ := sendBytes(t, kr, name, data, 333)
		wg.Go(func() {
			done, errs := deliver(t, r, msgs)
			if len(errs) > 0 || len(done) != 1 {
				t.Errorf("%s: done %d, errors %v", name, len(done), errs)
			}
		})
	}
	wg.Wait()
	if got := len(dirEntries(t, dir)); got != 8 {
		t.Errorf("%d files received, want 8", got)
	}
}

// TestRestart: at-least-once delivery. A receiver that sees chunk 0 again starts the
// transfer over; chunks of a completed transfer are ignored; a new receiver (consumer
// restart) that joins mid-transfer reports the transfer unknown until chunk 0 comes.
func TestRestart(t *testing.T) {
	kr := newTestKeyring()
	data := testData(1000)
	msgs, st := sendBytes(t, kr, "f", data, 100) // 11 messages

	check := func(t *testing.T, dir string, done []*Done) {
		t.Helper()
		if len(done) != 1 || done[0].TransferID != st.TransferID {
			t.Fatalf("done %v", done)
		}
		if !bytes.Equal(readFile(t, dir, "f"), data) {
			t.Fatal("content differs")
		}
		if got := dirEntries(t, dir); !slices.Equal(got, []string{"f"}) {
			t.Fatalf("destination holds %q", got)
		}
	}

	t.Run("redelivery from chunk 0 of an open transfer", func(t *testing.T) {
		dir := t.TempDir()
		r := newReceiver(t, kr, dir, ReceiveOptions{})
		unwraps := kr.unwraps.Load()
		seq := append(slices.Clone(msgs[:6]), msgs...)
		done, errs := deliver(t, r, seq)
		if len(errs) > 0 {
			t.Fatal(errs)
		}
		check(t, dir, done)
		if got := kr.unwraps.Load() - unwraps; got != 1 {
			t.Errorf("%d unwrap calls, want 1 (the key is kept across the restart)", got)
		}
	})
	t.Run("redelivery from chunk 0 after an abort", func(t *testing.T) {
		dir := t.TempDir()
		r := newReceiver(t, kr, dir, ReceiveOptions{})
		seq := append(slices.Clone(msgs[:4]), msgs[5:8]...) // chunk 4 lost
		seq = append(seq, msgs...)
		done, errs := deliver(t, r, seq)
		if len(errs) != 3 || !errors.Is(errs[0], ErrOrder) || !errors.Is(errs[1], ErrAborted) || !errors.Is(errs[2], ErrAborted) {
			t.Fatalf("errors %v, want one ErrOrder then two ErrAborted", errs)
		}
		check(t, dir, done)
	})
	t.Run("redelivery of a completed transfer", func(t *testing.T) {
		dir := t.TempDir()
		r := newReceiver(t, kr, dir, ReceiveOptions{})
		seq := append(slices.Clone(msgs), msgs...)
		seq = append(seq, msgs[3], msgs[10])
		unwraps := kr.unwraps.Load()
		done, errs := deliver(t, r, seq)
		if len(errs) != len(msgs)+2 {
			t.Fatalf("%d errors, want %d: %v", len(errs), len(msgs)+2, errs)
		}
		for _, err := range errs {
			var te *TransferError
			if !errors.Is(err, ErrAlreadyReceived) || !errors.As(err, &te) || te.ID != st.TransferID || te.Name != "f" {
				t.Fatalf("got %v, want ErrAlreadyReceived naming the transfer", err)
			}
		}
		check(t, dir, done)
		if got := kr.unwraps.Load() - unwraps; got != 1 {
			t.Errorf("%d unwrap calls, want 1", got)
		}
	})
	t.Run("new receiver joins mid-transfer", func(t *testing.T) {
		dir := t.TempDir()
		r := newReceiver(t, kr, dir, ReceiveOptions{})
		done, errs := deliver(t, r, msgs[5:])
		if len(done) != 0 || len(errs) != 6 {
			t.Fatalf("done %v, errors %v", done, errs)
		}
		for _, err := range errs {
			var te *TransferError
			if !errors.Is(err, ErrUnknownTransfer) || !errors.As(err, &te) || te.ID != st.TransferID {
				t.Fatalf("got %v, want ErrUnknownTransfer naming %s", err, st.TransferID)
			}
		}
		done, errs = deliver(t, r, msgs)
		if len(errs) > 0 {
			t.Fatal(errs)
		}
		check(t, dir, done)
	})
}

func TestExisting(t *testing.T) {
	kr := newTestKeyring()
	data := testData(500)
	msgs, st := sendBytes(t, kr, "f.txt", data, 100)
	old := []byte("precious")

	t.Run("refused", func(t *testing.T) {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, "f.txt"), old, 0o644)
		r := newReceiver(t, kr, dir, ReceiveOptions{})
		done, errs := deliver(t, r, msgs)
		if len(done) != 0 || len(errs) != len(msgs) || !errors.Is(errs[0], ErrExists) || !errors.Is(errs[1], ErrAborted) {
			t.Fatalf("done %v, errors %v", done, errs)
		}
		if !strings.Contains(errs[0].Error(), st.TransferID) || !strings.Contains(errs[0].Error(), `"f.txt"`) {
			t.Errorf("error %q does not name the transfer and file", errs[0])
		}
		if !bytes.Equal(readFile(t, dir, "f.txt"), old) || len(dirEntries(t, dir)) != 1 {
			t.Error("existing file changed or partial file left")
		}
	})
	t.Run("created during the transfer", func(t *testing.T) {
		dir := t.TempDir()
		r := newReceiver(t, kr, dir, ReceiveOptions{})
		_, errs := deliver(t, r, msgs[:3])
		os.WriteFile(filepath.Join(dir, "f.txt"), old, 0o644)
		done, errs2 := deliver(t, r, msgs[3:])
		errs = append(errs, errs2...)
		if len(done) != 0 || len(errs) != 1 || !errors.Is(errs[0], ErrExists) {
			t.Fatalf("done %v, errors %v", done, errs)
		}
		if !bytes.Equal(readFile(t, dir, "f.txt"), old) || len(dirEntries(t, dir)) != 1 {
			t.Error("existing file changed or partial file left")
		}
	})
	t.Run("overwrite", func(t *testing.T) {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, "f.txt"), old, 0o644)
		r := newReceiver(t, kr, dir, ReceiveOptions{Overwrite: true})
		done, errs := deliver(t, r, msgs)
		if len(done) != 1 || len(errs) != 0 {
			t.Fatalf("done %v, errors %v", done, errs)
		}
		if !bytes.Equal(readFile(t, dir, "f.txt"), data) || len(dirEntries(t, dir)) != 1 {
			t.Error("file not replaced, or partial file left")
		}
	})
}

// TestMaxOpenTransfers: beyond the bound, the least recently active transfer is set
// aside, not aborted: its next chunk reads its partial state again (one more unwrap).
func TestMaxOpenTransfers(t *testing.T) {
	kr := newTestKeyring()
	var streams [][]msg
	for i := range 3 {
		msgs, _ := sendBytes(t, kr, fmt.Sprint("f", i), testData(300), 100)
		streams = append(streams, msgs)
	}
	dir := t.TempDir()
	r := newReceiver(t, kr, dir, ReceiveOptions{MaxOpenTransfers: 2})
	clock := time.Unix(0, 0)
	r.now = func() time.Time { clock = clock.Add(time.Second); return clock }
	// f0 and f1 start; f1 makes progress; f2 starts and sets f0 aside, the least recent.
	var errs []error
	for _, m := range []msg{streams[0][0], streams[1][0], streams[1][1], streams[2][0]} {
		_, e := deliver(t, r, []msg{m})
		errs = append(errs, e...)
	}
	if len(errs) != 0 || len(r.open) != 2 || len(r.disk) != 1 {
		t.Fatalf("errors %v, %d open, %d set aside", errs, len(r.open), len(r.disk))
	}
	unwraps := kr.unwraps.Load()
	d0, e0 := deliver(t, r, streams[0][1:])
	d1, e1 := deliver(t, r, streams[1][2:])
	d2, e2 := deliver(t, r, streams[2][1:])
	if len(e0)+len(e1)+len(e2) != 0 || len(d0)+len(d1)+len(d2) != 3 {
		t.Fatalf("errors %v %v %v", e0, e1, e2)
	}
	if got := dirEntries(t, dir); !slices.Equal(got, []string{"f0", "f1", "f2"}) {
		t.Errorf("destination holds %q", got)
	}
	if got := kr.unwraps.Load() - unwraps; got != 2 {
		t.Errorf("%d unwrap calls, want 2 (f0 read again, and f1 then set aside for it)", got)
	}
}

// TestExpireAndClose: Expire gives a transfer up and removes its partial state; Close
// keeps the others' for the next Receiver on the directory.
func TestExpireAndClose(t *testing.T) {
	kr := newTestKeyring()
	a, sa := sendBytes(t, kr, "a", testData(300), 100)
	b, sb := sendBytes(t, kr, "b", testData(300), 100)
	dir := t.TempDir()
	r, err := NewReceiver(kr, dir, ReceiveOptions{})
	if err != nil {
		t.Fatal(err)
	}
	clock := time.Unix(1000, 0)
	r.now = func() time.Time { return clock }
	deliver(t, r, a[:2])
	clock = clock.Add(time.Minute)
	deliver(t, r, b[:2])
	if len(dirEntries(t, dir)) != 2 {
		t.Fatalf("want 2 partial state files, have %q", dirEntries(t, dir))
	}
	noPlaintext(t, dir, testData(300))
	clock = clock.Add(30 * time.Second)
	err = r.Expire(time.Minute)
	var te *TransferError
	if !errors.Is(err, ErrIncomplete) || !errors.As(err, &te) || te.ID != sa.TransferID || te.Name != "a" {
		t.Fatalf("Expire: %v, want ErrIncomplete for %s", err, sa.TransferID)
	}
	if err := r.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if got := dirEntries(t, dir); len(got) != 1 || !strings.Contains(got[0], sb.TransferID) {
		t.Errorf("destination holds %q, want b's partial state", got)
	}
	if _, err := r.Handle(context.Background(), a[0].body, a[0].md); !errors.Is(err, ErrClosed) {
		t.Errorf("Handle after Close: %v", err)
	}
	r2 := newReceiver(t, kr, dir, ReceiveOptions{})
	done, errs := deliver(t, r2, b[1:]) // the broker delivers chunk 1 again
	if len(errs) != 0 || len(done) != 1 || !bytes.Equal(readFile(t, dir, "b"), testData(300)) {
		t.Fatalf("done %v, errors %v", done, errs)
	}
}

func TestSenderSizeMismatch(t *testing.T) {
	kr := newTestKeyring()
	data := testData(1000)
	for _, c := range []struct {
		name string
		size int64
	}{{"input shorter", 1001}, {"input longer", 999}, {"input longer by a chunk", 900}} {
		t.Run(c.name, func(t *testing.T) {
			var rec recorder
			_, err := SendReader(context.Background(), kr, "f", c.size, bytes.NewReader(data), rec.send, SendOptions{ChunkSize: 100})
			if !errors.Is(err, ErrSize) {
				t.Fatalf("got %v, want ErrSize", err)
			}
			for _, m := range rec.msgs {
				if strings.HasSuffix(strings.Split(m.md[ChunkKey], ";kid=")[0], ";f=1") {
					t.Fatal("final chunk sent")
				}
			}
		})
	}
	t.Run("send fails", func(t *testing.T) {
		boom := errors.New("broker down")
		n := 0
		st, err := SendReader(context.Background(), kr, "f", 1000, bytes.NewReader(data),
			func(ctx context.Context, body []byte, md map[string]string) error {
				if n++; n == 3 {
					return boom
				}
				return nil
			}, SendOptions{ChunkSize: 100})
		var te *TransferError
		if !errors.Is(err, boom) || !errors.As(err, &te) || te.ID != st.TransferID || te.Index != 2 || st.Messages != 2 {
			t.Fatalf("got %v, stats %+v", err, st)
		}
	})
	t.Run("invalid options", func(t *testing.T) {
		gens := kr.gens.Load()
		for _, o := range []SendOptions{{ChunkSize: -1}, {ChunkSize: MaxChunkSize + 1}, {PartitionKey: "pubcrypt-x"}, {PartitionKey: "a\nb"}} {
			if _, err := SendReader(context.Background(), kr, "f", 10, bytes.NewReader(data), (&recorder{}).send, o); !errors.Is(err, ErrInvalidInput) {
				t.Errorf("%+v: got %v, want ErrInvalidInput", o, err)
			}
		}
		for _, size := range []int64{-1, MaxFileSize + 1} {
			if _, err := SendReader(context.Background(), kr, "f", size, bytes.NewReader(data), (&recorder{}).send, SendOptions{}); !errors.Is(err, ErrInvalidInput) {
				t.Errorf("size %d: got %v, want ErrInvalidInput", size, err)
			}
		}
		if _, err := SendReader(context.Background(), kr, "f", MaxFileSize, bytes.NewReader(data), (&recorder{}).send, SendOptions{ChunkSize: 1}); !errors.Is(err, ErrInvalidInput) {
			t.Errorf("2^40 one-byte chunks: got %v, want ErrInvalidInput", err)
		}
		if kr.gens.Load() != gens {
			t.Error("invalid input cost a key service call")
		}
	})
}

func TestPartitionKey(t *testing.T) {
	kr := newTestKeyring()
	var rec recorder
	st, err := SendReader(context.Background(), kr, "f", 250, bytes.NewReader(testData(250)), rec.send, SendOptions{ChunkSize: 100, PartitionKey: "kafka-key"})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range rec.msgs {
		if m.md["kafka-key"] != st.TransferID || len(m.md) != 3 {
			t.Fatalf("metadata %q", m.md)
		}
	}
	r := newReceiver(t, kr, t.TempDir(), ReceiveOptions{})
	if done, errs := deliver(t, r, rec.msgs); len(done) != 1 || len(errs) != 0 {
		t.Fatalf("done %v, errors %v", done, errs)
	}
}
