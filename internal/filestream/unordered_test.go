package filestream

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pubcrypt/pubcrypt/internal/wire"
)

// shuffled returns a copy of msgs in a random order drawn from seed.
func shuffled(msgs []msg, seed uint64) []msg {
	m := slices.Clone(msgs)
	rand.New(rand.NewPCG(seed, seed^0x5eed)).Shuffle(len(m), func(i, j int) { m[i], m[j] = m[j], m[i] })
	return m
}

// expectReceived checks that exactly one file, name with data, was received into dir and
// that nothing else is there.
func expectReceived(t *testing.T, dir, name string, data []byte, done []*Done, id string) {
	t.Helper()
	if len(done) != 1 || done[0].TransferID != id || done[0].Name != name || done[0].Size != int64(len(data)) {
		t.Fatalf("done %+v, want one Done for %s", done, id)
	}
	if got := readFile(t, dir, name); !bytes.Equal(got, data) {
		t.Fatalf("received %d bytes differ from the %d sent", len(got), len(data))
	}
	if got := dirEntries(t, dir); !slices.Equal(got, []string{name}) {
		t.Fatalf("destination holds %q", got)
	}
}

// onlyAlreadyReceived fails unless every error is ErrAlreadyReceived.
func onlyAlreadyReceived(t *testing.T, errs []error) {
	t.Helper()
	for _, err := range errs {
		if !errors.Is(err, ErrAlreadyReceived) {
			t.Fatalf("error %v (all errors: %v)", err, errs)
		}
	}
}

func TestUnorderedPermutations(t *testing.T) {
	kr := newTestKeyring()
	for _, c := range []struct{ size, chunk int }{{0, 7}, {1, 7}, {7, 7}, {8, 7}, {1000, 7}, {3*1000 + 5, 1000}, {100000, 4099}} {
		data := testData(c.size)
		msgs, st := sendBytes(t, kr, "f.bin", data, c.chunk)
		for seed := range uint64(6) {
			t.Run(fmt.Sprintf("size=%d/chunk=%d/seed=%d", c.size, c.chunk, seed), func(t *testing.T) {
				dir := t.TempDir()
				var calls int
				r := newReceiver(t, kr, dir, ReceiveOptions{Unordered: true,
					Progress: func(string, int64, int64) { calls++ }})
				unwraps := kr.unwraps.Load()
				done, errs := deliver(t, r, shuffled(msgs, seed))
				if len(errs) > 0 {
					t.Fatal(errs)
				}
				expectReceived(t, dir, "f.bin", data, done, st.TransferID)
				if got := kr.unwraps.Load() - unwraps; got != 1 {
					t.Errorf("%d unwrap calls, want 1", got)
				}
				if calls != len(msgs) {
					t.Errorf("%d progress calls, want %d", calls, len(msgs))
				}
				if len(r.open) != 0 || len(r.disk) != 0 {
					t.Errorf("after completion: %d transfers open, %d on disk", len(r.open), len(r.disk))
				}
			})
		}
	}
}

func TestUnorderedHeaderLast(t *testing.T) {
	kr := newTestKeyring()
	data := testData(1000)
	msgs, st := sendBytes(t, kr, "f", data, 100) // header + 10 data chunks
	reversed := slices.Clone(msgs[1:])
	slices.Reverse(reversed)
	for name, seq := range map[string][]msg{
		"in order":  append(slices.Clone(msgs[1:]), msgs[0]),
		"reversed":  append(reversed, msgs[0]),
		"shuffled":  append(shuffled(msgs[1:], 42), msgs[0]),
		"half each": append(append(slices.Clone(msgs[6:]), msgs[0]), msgs[1:6]...),
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			r := newReceiver(t, kr, dir, ReceiveOptions{Unordered: true})
			done, errs := deliver(t, r, seq)
			if len(errs) > 0 {
				t.Fatal(errs)
			}
			expectReceived(t, dir, "f", data, done, st.TransferID)
		})
	}
	// The Done comes from chunk 0 when it is the last message.
	r := newReceiver(t, kr, t.TempDir(), ReceiveOptions{Unordered: true})
	for _, m := range msgs[1:] {
		if d, err := r.Handle(context.Background(), m.body, m.md); d != nil || err != nil {
			t.Fatalf("data chunk before the header: %v, %v", d, err)
		}
	}
	if d, err := r.Handle(context.Background(), msgs[0].body, msgs[0].md); err != nil || d == nil || d.Chunks != 11 {
		t.Fatalf("chunk 0: %+v, %v", d, err)
	}
}

func TestUnorderedDuplicates(t *testing.T) {
	kr := newTestKeyring()
	data := testData(2000)
	msgs, st := sendBytes(t, kr, "dup.bin", data, 150) // header + 14 data chunks
	for seed := range uint64(8) {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			// Every chunk twice, some three times, all shuffled. Copies after the
			// completion are ErrAlreadyReceived, the others are ignored silently.
			seq := append(slices.Clone(msgs), msgs...)
			seq = append(seq, msgs[0], msgs[1], msgs[len(msgs)-1])
			seq = shuffled(seq, seed)
			dir := t.TempDir()
			r := newReceiver(t, kr, dir, ReceiveOptions{Unordered: true})
			done, errs := deliver(t, r, seq)
			onlyAlreadyReceived(t, errs)
			expectReceived(t, dir, "dup.bin", data, done, st.TransferID)
		})
	}
	t.Run("duplicates before the header count once", func(t *testing.T) {
		dir := t.TempDir()
		r := newReceiver(t, kr, dir, ReceiveOptions{Unordered: true})
		seq := []msg{msgs[3], msgs[3], msgs[5], msgs[3], msgs[5], msgs[0], msgs[0], msgs[3]}
		seq = append(seq, msgs[1:]...)
		done, errs := deliver(t, r, seq)
		if len(errs) > 0 {
			t.Fatal(errs)
		}
		expectReceived(t, dir, "dup.bin", data, done, st.TransferID)
	})
}

// TestUnorderedEarlyChunks: data chunks that come before their header are stored on
// disk like the others (ciphertext, in the transfer's partial state), not held in
// memory, however many: a header that comes last completes the file.
func TestUnorderedEarlyChunks(t *testing.T) {
	kr := newTestKeyring()
	data := testData(100000)
	msgs, st := sendBytes(t, kr, "f", data, 1000) // header + 100 data chunks
	other, ost := sendBytes(t, kr, "g", data, 1000)
	dir := t.TempDir()
	r := newReceiver(t, kr, dir, ReceiveOptions{Unordered: true})
	// Both transfers' data chunks interleaved, then the headers.
	var seq []msg
	for i := 1; i < len(msgs); i++ {
		seq = append(seq, msgs[i], other[len(other)-i])
	}
	done, errs := deliver(t, r, seq)
	if len(done) != 0 || len(errs) != 0 {
		t.Fatalf("done %v, errors %v", done, errs)
	}
	ps := r.Partials()
	if len(ps) != 2 || ps[0].Chunks != 100 || ps[0].Total != 101 || ps[1].Chunks != 100 {
		t.Fatalf("partials %+v", ps)
	}
	noPlaintext(t, dir, data)
	d1, e1 := deliver(t, r, []msg{other[0]})
	d2, e2 := deliver(t, r, []msg{msgs[0]})
	if len(e1)+len(e2) != 0 || len(d1) != 1 || len(d2) != 1 || d1[0].TransferID != ost.TransferID || d2[0].TransferID != st.TransferID {
		t.Fatalf("done %v %v, errors %v %v", d1, d2, e1, e2)
	}
	for _, name := range []string{"f", "g"} {
		if !bytes.Equal(readFile(t, dir, name), data) {
			t.Fatalf("%s differs", name)
		}
	}
}

// expectUnorderedFailed is expectFailed with an unordered receiver: no file is installed,
// no partial file stays, and the errors naming transfer id are returned.
func expectUnorderedFailed(t *testing.T, kr *testKeyring, id string, msgs []msg) []error {
	t.Helper()
	return expectFailedWith(t, kr, ReceiveOptions{Unordered: true}, id, msgs)
}

func TestUnorderedRefused(t *testing.T) {
	kr := newTestKeyring()
	msgs, st := sendBytes(t, kr, "secret.txt", testData(1000), 200) // header + 5 data chunks
	other, _ := sendBytes(t, kr, "other.txt", testData(1000), 200)
	last := len(msgs) - 1
	with := func(f func(m []msg) []msg) []msg {
		m := make([]msg, len(msgs))
		for i := range msgs {
			m[i] = msgs[i].clone()
		}
		return f(m)
	}
	relabel := func(m msg, as msg) msg {
		m = m.clone()
		m.md[ChunkKey] = as.md[ChunkKey]
		m.md[DEKKey] = as.md[DEKKey]
		return m
	}
	cases := []struct {
		name string
		msgs []msg
		kind error
	}{
		{"drop last chunk", with(func(m []msg) []msg { return m[:last] }), ErrIncomplete},
		{"drop middle chunk", with(func(m []msg) []msg { return slices.Delete(m, 3, 4) }), ErrIncomplete},
		{"drop chunk 0", with(func(m []msg) []msg { return m[1:] }), ErrIncomplete},
		{"drop last chunk, shuffled", shuffled(msgs[:last], 3), ErrIncomplete},
		{"drop chunk 0, shuffled, duplicates", shuffled(append(slices.Clone(msgs[1:]), msgs[1:]...), 4), ErrIncomplete},
		{"only chunk 0", msgs[:1], ErrIncomplete},
		{"chunk of another file, same index", with(func(m []msg) []msg { m[2] = other[2]; return m }), ErrIncomplete},
		{"chunk of another file relabelled", with(func(m []msg) []msg {
			m[2] = other[2].clone()
			m[2].md[ChunkKey] = msgs[2].md[ChunkKey]
			return m
		}), ErrAuth},
		{"chunk of another file relabelled with this key", with(func(m []msg) []msg { m[2] = relabel(other[2], msgs[2]); return m }), ErrAuth},
		// A refused chunk aborts the transfer: the chunk held before it is dropped, so
		// the restart at chunk 0 cannot complete.
		{"chunk of another file relabelled, before the header", with(func(m []msg) []msg {
			return append([]msg{m[1], relabel(other[2], msgs[2]), m[0]}, m[2:]...)
		}), ErrAuth},
		{"header of another file relabelled, last", with(func(m []msg) []msg {
			return append(m[1:], relabel(other[0], msgs[0]))
		}), ErrAuth},
		{"final chunk of another file relabelled, before the header", with(func(m []msg) []msg {
			return append([]msg{m[1], relabel(other[last], msgs[last]), m[0]}, m[2:]...)
		}), ErrAuth},
		{"final flag removed", with(func(m []msg) []msg {
			m[last].md[ChunkKey] = strings.Replace(m[last].md[ChunkKey], ";f=1", ";f=0", 1)
			return m
		}), ErrAuth},
		{"tampered body before the header", with(func(m []msg) []msg {
			m[3].body[0] ^= 1
			return append(m[1:], m[0])
		}), ErrAuth},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			named := expectUnorderedFailed(t, kr, st.TransferID, c.msgs)
			if !errors.Is(named[0], c.kind) {
				t.Fatalf("first error %v, want %v", named[0], c.kind)
			}
		})
	}
}

// TestUnorderedInconsistent: a sender that does not follow the format (its chunks
// authentic, but the header disagrees with them) is refused, whatever the order.
func TestUnorderedInconsistent(t *testing.T) {
	kr := newTestKeyring()
	dk, err := kr.GenerateDataKey(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	aead := newAEAD(dk.Plaintext)
	id := transferID{1, 2, 3}
	seal := func(index uint64, final bool, pt []byte) msg {
		nonce := wire.Nonce(index)
		ad := appendAD(nil, id, index, final, dk.KeyID, dk.Wrapped)
		return msg{aead.Seal(nil, nonce[:], pt, ad), map[string]string{
			ChunkKey: formatRef(id, index, final, dk.KeyID), DEKKey: dk.Wrapped,
		}}
	}
	hdr := seal(0, false, appendHeader(nil, fileHeader{size: 20, chunkSize: 10, name: "x"})) // 2 data chunks
	ten := bytes.Repeat([]byte{'a'}, 10)
	for name, seq := range map[string][]msg{
		"chunk beyond the last, before the header": {seal(3, false, ten), seal(1, false, ten), hdr, seal(2, true, ten)},
		"chunk beyond the last, after the header":  {hdr, seal(3, false, ten), seal(1, false, ten), seal(2, true, ten)},
		"final flag early, before the header":      {seal(1, true, ten), hdr, seal(2, true, ten)},
		"final flag missing, after the header":     {hdr, seal(2, false, ten), seal(1, false, ten)},
		"short chunk, before the header":           {seal(1, false, ten[:9]), hdr, seal(2, true, ten)},
		"long last chunk, after the header":        {seal(1, false, ten), hdr, seal(2, true, append(ten, 'b'))},
	} {
		t.Run(name, func(t *testing.T) {
			named := expectUnorderedFailed(t, kr, id.String(), seq)
			if !errors.Is(named[0], ErrMalformed) {
				t.Fatalf("first error %v, want ErrMalformed", named[0])
			}
		})
	}
}

// TestUnorderedStrictUnchanged: without Unordered, a reordered chunk is still refused.
func TestUnorderedStrictUnchanged(t *testing.T) {
	kr := newTestKeyring()
	msgs, st := sendBytes(t, kr, "f", testData(1000), 100)
	named := expectFailed(t, kr, st.TransferID, shuffled(msgs, 1))
	if !errors.Is(named[0], ErrOrder) && !errors.Is(named[0], ErrUnknownTransfer) {
		t.Fatalf("first error %v, want ErrOrder or ErrUnknownTransfer", named[0])
	}
	named = expectFailed(t, kr, st.TransferID, append([]msg{msgs[0], msgs[2]}, msgs[1:]...))
	if !errors.Is(named[0], ErrOrder) {
		t.Fatalf("first error %v, want ErrOrder", named[0])
	}
}

// TestUnorderedLifecycle: open transfers without a header are aborted by Expire, Close
// and MaxOpenTransfers like any other, and a completed transfer's chunks are ignored.
func TestUnorderedLifecycle(t *testing.T) {
	kr := newTestKeyring()
	data := testData(1000)
	msgs, st := sendBytes(t, kr, "f", data, 100)

	t.Run("expire and close", func(t *testing.T) {
		dir := t.TempDir()
		r := newReceiver(t, kr, dir, ReceiveOptions{Unordered: true})
		now := time.Unix(1000, 0)
		r.now = func() time.Time { return now }
		deliver(t, r, msgs[3:6])
		now = now.Add(time.Hour)
		if err := r.Expire(time.Minute); !errors.Is(err, ErrIncomplete) || !strings.Contains(err.Error(), "before chunk 0") {
			t.Fatalf("Expire: %v", err)
		}
		if len(r.open) != 0 || len(dirEntries(t, dir)) != 0 {
			t.Fatalf("%d open, destination holds %q", len(r.open), dirEntries(t, dir))
		}
		// Close keeps a transfer in progress for the next Receiver, which finishes it.
		other, ost := sendBytes(t, kr, "g", data, 100)
		deliver(t, r, []msg{other[0], other[4]})
		if err := r.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		r2 := newReceiver(t, kr, dir, ReceiveOptions{Unordered: true})
		if ps := r2.Partials(); len(ps) != 1 || ps[0].TransferID != ost.TransferID || ps[0].Chunks != 2 || ps[0].Total != 0 {
			t.Fatalf("partials after a restart: %+v", ps)
		}
		done, errs := deliver(t, r2, shuffled(other, 5))
		onlyAlreadyReceived(t, errs) // chunks 0 and 4 again, if they come after the completion
		expectReceived(t, dir, "g", data, done, ost.TransferID)
	})
	t.Run("max open transfers", func(t *testing.T) {
		// The transfer set aside goes on from its partial state.
		dir := t.TempDir()
		r := newReceiver(t, kr, dir, ReceiveOptions{Unordered: true, MaxOpenTransfers: 1})
		other, ost := sendBytes(t, kr, "g", data, 100)
		_, errs := deliver(t, r, []msg{msgs[2], other[2]})
		if len(errs) != 0 || len(r.open) != 1 || len(r.disk) != 1 {
			t.Fatalf("errors %v, %d open, %d set aside", errs, len(r.open), len(r.disk))
		}
		d1, e1 := deliver(t, r, shuffled(msgs, 3))
		d2, e2 := deliver(t, r, shuffled(other, 4))
		if len(e1)+len(e2) != 0 || len(d1) != 1 || len(d2) != 1 || d2[0].TransferID != ost.TransferID {
			t.Fatalf("done %v %v, errors %v %v", d1, d2, e1, e2)
		}
	})
	t.Run("forged chunk before any other", func(t *testing.T) {
		// Refused and remembered; the genuine chunk 0 starts the transfer afresh.
		other, _ := sendBytes(t, kr, "g", data, 100)
		forged := other[3].clone()
		forged.md[ChunkKey], forged.md[DEKKey] = msgs[3].md[ChunkKey], msgs[3].md[DEKKey]
		dir := t.TempDir()
		r := newReceiver(t, kr, dir, ReceiveOptions{Unordered: true})
		if _, err := r.Handle(context.Background(), forged.body, forged.md); !errors.Is(err, ErrAuth) {
			t.Fatalf("forged chunk: %v", err)
		}
		if _, err := r.Handle(context.Background(), msgs[5].body, msgs[5].md); !errors.Is(err, ErrAborted) {
			t.Fatalf("chunk after the refusal: %v", err)
		}
		done, errs := deliver(t, r, msgs)
		if len(errs) > 0 {
			t.Fatal(errs)
		}
		expectReceived(t, dir, "f", data, done, st.TransferID)
	})
	t.Run("completed", func(t *testing.T) {
		dir := t.TempDir()
		r := newReceiver(t, kr, dir, ReceiveOptions{Unordered: true})
		done, errs := deliver(t, r, append(shuffled(msgs, 9), msgs[4], msgs[0]))
		if len(errs) != 2 {
			t.Fatalf("errors %v, want two ErrAlreadyReceived", errs)
		}
		onlyAlreadyReceived(t, errs)
		expectReceived(t, dir, "f", data, done, st.TransferID)
	})
}

// TestUnorderedConcurrent: the chunks of one transfer, shuffled, spread over several
// goroutines (as several consumers of one queue would). Run with -race.
func TestUnorderedConcurrent(t *testing.T) {
	kr := newTestKeyring()
	dir := t.TempDir()
	r := newReceiver(t, kr, dir, ReceiveOptions{Unordered: true})
	type file struct {
		name string
		data []byte
		id   string
	}
	var files []file
	var all []msg
	for i := range 4 {
		f := file{name: fmt.Sprintf("file-%d", i), data: testData(20000 + i)}
		msgs, st := sendBytes(t, kr, f.name, f.data, 333)
		f.id = st.TransferID
		files = append(files, f)
		all = append(all, msgs...)
		all = append(all, msgs[5], msgs[0]) // redeliveries
	}
	all = shuffled(all, 77)
	var mu sync.Mutex
	var done []*Done
	var wg sync.WaitGroup
	for g := range 6 {
		wg.Go(func() {
			var mine []msg
			for i := g; i < len(all); i += 6 {
				mine = append(mine, all[i])
			}
			d, errs := deliver(t, r, mine)
			for _, err := range errs {
				if !errors.Is(err, ErrAlreadyReceived) {
					t.Errorf("goroutine %d: %v", g, err)
				}
			}
			mu.Lock()
			done = append(done, d...)
			mu.Unlock()
		})
	}
	wg.Wait()
	if len(done) != len(files) {
		t.Fatalf("%d Done, want %d", len(done), len(files))
	}
	for _, f := range files {
		if !bytes.Equal(readFile(t, dir, f.name), f.data) {
			t.Errorf("%s differs", f.name)
		}
	}
	if got := len(dirEntries(t, dir)); got != len(files) {
		t.Errorf("%d entries, want %d", got, len(files))
	}
}
