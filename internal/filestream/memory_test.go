package filestream

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"runtime"
	"testing"
	"time"
)

// pipeResult is what streaming one file through SendReader and a Receiver cost.
type pipeResult struct {
	chunks     int64
	totalAlloc uint64 // bytes allocated during the transfer
	peakHeap   uint64 // highest HeapInuse sampled during the transfer
	baseHeap   uint64 // HeapInuse after a GC just before it
}

// pipe streams size pseudo-random bytes from SendReader to a Receiver, message by
// message (an in-memory broker of one message). With measure, it samples the heap as it
// goes and checks the received file against the sent stream by SHA-256.
func pipe(t testing.TB, kr *testKeyring, dir string, size int64, chunk int, measure bool) pipeResult {
	t.Helper()
	ctx := context.Background()
	r, err := NewReceiver(kr, dir, ReceiveOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	name := fmt.Sprintf("stream-%d", size)
	sent := sha256.New()
	src := io.LimitReader(newPRNG(uint64(size)), size)
	if measure {
		src = io.TeeReader(src, sent)
	}

	var res pipeResult
	var ms runtime.MemStats
	if measure {
		runtime.GC()
		runtime.ReadMemStats(&ms)
	}
	res.baseHeap, res.peakHeap = ms.HeapInuse, ms.HeapInuse
	startAlloc := ms.TotalAlloc
	var done *Done
	send := func(ctx context.Context, body []byte, md map[string]string) error {
		d, err := r.Handle(ctx, body, md)
		if err != nil {
			return err
		}
		if d != nil {
			done = d
		}
		if res.chunks++; measure && res.chunks%8 == 0 {
			runtime.ReadMemStats(&ms)
			res.peakHeap = max(res.peakHeap, ms.HeapInuse)
		}
		return nil
	}
	st, err := SendReader(ctx, kr, name, size, src, send, SendOptions{ChunkSize: chunk})
	if err != nil {
		t.Fatal(err)
	}
	if done == nil || done.Size != size || st.Messages != res.chunks {
		t.Fatalf("transfer of %d bytes: done %+v, stats %+v", size, done, st)
	}
	if !measure {
		os.Remove(done.Path)
		return res
	}
	runtime.ReadMemStats(&ms)
	res.peakHeap = max(res.peakHeap, ms.HeapInuse)
	res.totalAlloc = ms.TotalAlloc - startAlloc

	f, err := os.Open(done.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got := sha256.New()
	if _, err := io.Copy(got, f); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Sum(nil), sent.Sum(nil)) {
		t.Fatalf("received %s differs from the stream sent", name)
	}
	os.Remove(f.Name())
	return res
}

// TestConstantMemory streams 16, 128 and 256 MiB through SendReader and a Receiver with
// 512 KiB chunks. Memory must not grow with the file: the live heap stays within 16 MiB
// of where it started, and the bytes allocated grow only by a small amount per chunk
// (metadata strings), not per byte of file.
func TestConstantMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("streams 400 MiB")
	}
	kr := newTestKeyring()
	dir := t.TempDir()
	const chunk = DefaultChunkSize
	start := time.Now()
	small := pipe(t, kr, dir, 16<<20, chunk, true)
	large := pipe(t, kr, dir, 128<<20, chunk, true)
	huge := pipe(t, kr, dir, 256<<20, chunk, true)
	t.Logf("streamed 400 MiB in %v", time.Since(start).Round(time.Millisecond))
	for _, c := range []struct {
		name string
		res  pipeResult
	}{{"16 MiB", small}, {"128 MiB", large}, {"256 MiB", huge}} {
		t.Logf("%-7s %4d chunks: allocated %7.1f KiB (%5.0f B/chunk), heap in use %5.1f MiB at start, %5.1f MiB at peak",
			c.name, c.res.chunks, float64(c.res.totalAlloc)/1024, float64(c.res.totalAlloc)/float64(c.res.chunks),
			float64(c.res.baseHeap)/(1<<20), float64(c.res.peakHeap)/(1<<20))
		if grow := int64(c.res.peakHeap) - int64(c.res.baseHeap); grow > 16<<20 {
			t.Errorf("%s: heap in use grew by %d MiB, want at most 16 MiB", c.name, grow>>20)
		}
	}
	// The larger transfers have 224 and 480 more chunks: at most 4 KiB more allocated
	// per extra chunk (a per-byte allocation would add 112 MiB or more).
	for _, c := range []struct {
		name string
		res  pipeResult
	}{{"128 MiB", large}, {"256 MiB", huge}} {
		extra := c.res.chunks - small.chunks
		if grow := int64(c.res.totalAlloc) - int64(small.totalAlloc); grow > extra*4096 {
			t.Errorf("%s allocated %d bytes more than 16 MiB for %d more chunks: more than 4 KiB per chunk", c.name, grow, extra)
		}
	}
}

// BenchmarkTransfer measures a file sent with SendReader and received by a Receiver
// (encrypt, decrypt, write to a file, rename), against a baseline in the same run: the
// same bytes copied to a file in chunks of the same size, without encryption. The loops
// alternate so that CPU frequency changes and neighbours' load hit them alike.
// ratio-vs-copy is the transfer's time over the baseline's; B/op stays flat as the size
// grows (memory does not depend on the file size).
func BenchmarkTransfer(b *testing.B) {
	for _, size := range []int64{16 << 20, 128 << 20} {
		b.Run(fmt.Sprintf("%dMiB", size>>20), func(b *testing.B) {
			kr := newTestKeyring()
			dir := b.TempDir()
			buf := make([]byte, DefaultChunkSize)
			baseline := func() {
				f, err := os.CreateTemp(dir, "copy-*")
				if err != nil {
					b.Fatal(err)
				}
				if _, err := io.CopyBuffer(struct{ io.Writer }{f}, io.LimitReader(newPRNG(1), size), buf); err != nil {
					b.Fatal(err)
				}
				f.Sync()
				f.Close()
				os.Remove(f.Name())
			}
			var transfer time.Duration
			var copying time.Duration
			b.SetBytes(size)
			b.ReportAllocs()
			for b.Loop() {
				start := time.Now()
				pipe(b, kr, dir, size, DefaultChunkSize, false)
				transfer += time.Since(start)
				b.StopTimer()
				start = time.Now()
				baseline()
				copying += time.Since(start)
				b.StartTimer()
			}
			b.ReportMetric(float64(transfer)/float64(copying), "ratio-vs-copy")
		})
	}
}
