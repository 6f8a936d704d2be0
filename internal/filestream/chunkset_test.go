package filestream

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"runtime"
	"testing"

	"github.com/pubcrypt/pubcrypt/fault"
	"github.com/pubcrypt/pubcrypt/internal/wire"
)

// TestChunkSet checks the paged set against a map: membership, count, max and the first
// missing index, with indices at page and word edges and far apart.
func TestChunkSet(t *testing.T) {
	var s chunkSet
	ref := map[uint64]bool{}
	check := func() {
		t.Helper()
		want := uint64(1)
		for ref[want] {
			want++
		}
		if got := s.firstMissing(); got != want {
			t.Fatalf("firstMissing = %d, want %d", got, want)
		}
		var m uint64
		for i := range ref {
			m = max(m, i)
		}
		if s.count != uint64(len(ref)) || s.max != m {
			t.Fatalf("count %d max %d, want %d %d", s.count, s.max, len(ref), m)
		}
	}
	check()
	rng := mrand.New(mrand.NewPCG(1, 2))
	edges := []uint64{1, 2, 63, 64, 65, pageBits - 1, pageBits, pageBits + 1, 2 * pageBits, MaxChunks - 1, MaxChunks}
	for round := range 2000 {
		var i uint64
		switch round % 3 {
		case 0:
			i = edges[rng.IntN(len(edges))]
		case 1:
			i = 1 + rng.Uint64N(3*pageBits) // dense near the start: firstMissing moves
		default:
			i = 1 + rng.Uint64N(MaxChunks)
		}
		if s.has(i) != ref[i] {
			t.Fatalf("has(%d) = %t before set", i, s.has(i))
		}
		s.set(i)
		s.set(i) // a redelivery changes nothing
		ref[i] = true
		if !s.has(i) || s.has(0) {
			t.Fatalf("has(%d) = %t, has(0) = %t after set", i, s.has(i), s.has(0))
		}
		check()
	}
	for i := range ref {
		if !s.has(i) {
			t.Fatalf("lost %d", i)
		}
	}
}

// farSpool is the spool the fuzzer found: 103 bytes, chunk 0 missing, one record for data
// chunk MaxChunks (2^28) whose body does not authenticate. The dense bitmap this replaced
// grew to 2^22 words (32 MiB, about 200 MB allocated on the way) to note that one index.
func farSpool(t testing.TB) []byte {
	kr, _, _ := fixedTransfer(t)
	b := appendPreamble(nil, transferID{'f', 'u', 'z', 'z'}, kr.kid, kr.wrapped)
	b = appendRecordHeader(b, MaxChunks, true, wire.TagSize)
	return append(b, make([]byte, wire.TagSize)...)
}

// TestSummarizeFarIndex: reading the framing of a spool costs memory for the records it
// holds, not for how large their indices are.
func TestSummarizeFarIndex(t *testing.T) {
	spool := farSpool(t)
	if len(spool) != 103 {
		t.Fatalf("spool of %d bytes, want the fuzzer's 103", len(spool))
	}
	sum, err := summarize(bytes.NewReader(spool), int64(len(spool)))
	if err != nil {
		t.Fatal(err)
	}
	if sum.records != 1 || sum.total != MaxChunks+1 || sum.complete {
		t.Fatalf("summary %+v", sum)
	}
	const runs = 20
	allocs := testing.AllocsPerRun(runs, func() { summarize(bytes.NewReader(spool), int64(len(spool))) })
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for range runs {
		summarize(bytes.NewReader(spool), int64(len(spool)))
	}
	runtime.ReadMemStats(&after)
	perRun := (after.TotalAlloc - before.TotalAlloc) / runs
	t.Logf("summarize of a %d-byte spool with index 2^28: %.0f allocations, %d bytes per run", len(spool), allocs, perRun)
	if allocs > 16 || perRun > 16<<10 {
		t.Fatalf("summarize allocated %.0f times, %d bytes per run; want at most 16 and 16 KiB", allocs, perRun)
	}
}

// TestUnorderedFarIndexMemory: a producer holding a data key sends, for each of 16
// transfers, chunk 0 declaring a 1 TiB file in 2^28 chunks and that file's last chunk
// (authentic, the right length). Each transfer stays open, waiting for the rest; the
// memory they hold is what they stored (a page of the chunk set each), not a bitmap of
// 2^28 bits (32 MiB each, 512 MiB in all).
func TestUnorderedFarIndexMemory(t *testing.T) {
	ctx := context.Background()
	kr := newTestKeyring()
	r, err := NewReceiver(kr, t.TempDir(), ReceiveOptions{Unordered: true})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	const transfers = 16
	huge := fileHeader{size: MaxFileSize, chunkSize: MaxFileSize / MaxChunks, mode: 0o644, mtime: 1}
	if dataChunks(huge.size, huge.chunkSize) != MaxChunks {
		t.Fatalf("header of %d chunks", dataChunks(huge.size, huge.chunkSize))
	}
	last := make([]byte, huge.chunkLen(MaxChunks, MaxChunks))
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for k := range transfers {
		s := newTestSealer(t, kr)
		h := huge
		h.name = fmt.Sprintf("huge-%d", k)
		// Half get the far chunk before the header (no chunk count known yet), half after.
		msgs := []msg{
			{s.seal(nil, 0, false, appendHeader(nil, h)), s.metadata(0, false, "")},
			{s.seal(nil, MaxChunks, true, last), s.metadata(MaxChunks, true, "")},
		}
		if k%2 == 0 {
			msgs[0], msgs[1] = msgs[1], msgs[0]
		}
		for _, m := range msgs {
			if d, err := r.Handle(ctx, m.body, m.md); d != nil || err != nil {
				t.Fatalf("transfer %d: Handle = %v, %v", k, d, err)
			}
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	grow := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	t.Logf("%d open transfers, each with its chunk 2^28: heap grew by %d KiB, %d KiB allocated",
		transfers, grow>>10, (after.TotalAlloc-before.TotalAlloc)>>10)
	if grow > 4<<20 {
		t.Fatalf("heap grew by %d MiB for %d transfers holding one data chunk each; want at most 4 MiB", grow>>20, transfers)
	}
	ps := r.Partials()
	if len(ps) != transfers {
		t.Fatalf("%d partial transfers, want %d", len(ps), transfers)
	}
	for _, p := range ps {
		if p.Chunks != 2 || p.Total != MaxChunks+1 {
			t.Fatalf("partial %+v: want 2 chunks of %d", p, MaxChunks+1)
		}
	}
	runtime.KeepAlive(r)
}

// TestUnorderedIndexBeyondHeader: an authentic index beyond the chunk count its header
// declares is a fault of the message, whether it came before the header or after.
func TestUnorderedIndexBeyondHeader(t *testing.T) {
	ctx := context.Background()
	kr := newTestKeyring()
	r, err := NewReceiver(kr, t.TempDir(), ReceiveOptions{Unordered: true})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	small := fileHeader{size: 300, chunkSize: 200, mode: 0o644, mtime: 1} // 2 data chunks
	for _, early := range []bool{true, false} {
		s := newTestSealer(t, kr)
		h := small
		h.name = fmt.Sprintf("small-%t", early)
		hdr := msg{s.seal(nil, 0, false, appendHeader(nil, h)), s.metadata(0, false, "")}
		far := msg{s.seal(nil, MaxChunks, true, make([]byte, 100)), s.metadata(MaxChunks, true, "")}
		first, second := hdr, far
		if early {
			first, second = far, hdr
		}
		if _, err := r.Handle(ctx, first.body, first.md); err != nil {
			t.Fatalf("early=%t: first message: %v", early, err)
		}
		_, err := r.Handle(ctx, second.body, second.md)
		var te *TransferError
		if !errors.Is(err, ErrMalformed) || fault.ClassOf(err) != fault.Message || !errors.As(err, &te) {
			t.Fatalf("early=%t: chunk %d of a file of 2 data chunks: %v, want a malformed TransferError", early, uint64(MaxChunks), err)
		}
	}
	if ps := r.Partials(); len(ps) != 0 {
		t.Fatalf("aborted transfers left partial state: %+v", ps)
	}
}

// newTestSealer seals the chunks of a new transfer under a data key from kr.
func newTestSealer(t *testing.T, kr *testKeyring) *chunkSealer {
	t.Helper()
	dk, err := kr.GenerateDataKey(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	aead, err := dk.AEAD()
	if err != nil {
		t.Fatal(err)
	}
	s := &chunkSealer{aead: aead, kid: dk.KeyID, wrapped: dk.Wrapped}
	rand.Read(s.id[:])
	return s
}
