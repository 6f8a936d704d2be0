package envelope

import (
	"strings"
	"testing"
	"time"

	"github.com/pubcrypt/pubcrypt/internal/wire"
)

// BenchmarkSealOpen measures one send and one receive (Seal, then Parse and Open)
// against raw AES-256-GCM Seal+Open of the same body under the same key, in the same
// run. The three loops alternate in chunks of about 1 MiB so that CPU frequency changes
// and neighbours' load hit them alike.
//
// ns/op, MB/s and allocs are the envelope's. The baseline of ratio-vs-raw-gcm is
// aead.Seal(nil, ...) + aead.Open(nil, ...): raw GCM into freshly allocated buffers, as
// the envelope must (its ciphertext and plaintext belong to the caller). The baseline of
// ratio-vs-raw-gcm-reuse decrypts into buffers it reuses, so it pays for no allocation
// at all: the gap to it is mostly the Go allocator and GC.
func BenchmarkSealOpen(b *testing.B) {
	for _, bc := range []struct {
		name      string
		size      int
		sensitive []string
	}{
		{"1KiB", 1 << 10, nil},
		{"64KiB", 64 << 10, nil},
		{"64KiB-sensitive", 64 << 10, []string{"filename"}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			aead := newAEAD(testKey("bench"))
			in := SealInput{
				AEAD:    aead,
				KeyID:   "orders",
				Wrapped: "vault:v1:" + strings.Repeat("A", 80), // the size of a Vault-wrapped 256-bit key
				Body:    make([]byte, bc.size),
				Metadata: map[string]string{
					"content-type": "application/octet-stream",
					"trace-id":     "4bf92f3577b34da6a3ce929d0e0e4736",
					"filename":     "report.pdf",
				},
				Sensitive: bc.sensitive,
			}
			nonce := wire.Nonce(1)
			rawAlloc := func() {
				ct := aead.Seal(nil, nonce[:], in.Body, nil)
				if _, err := aead.Open(nil, nonce[:], ct, nil); err != nil {
					b.Fatal(err)
				}
			}
			ctBuf := make([]byte, 0, bc.size+wire.TagSize)
			ptBuf := make([]byte, 0, bc.size)
			rawReuse := func() {
				ct := aead.Seal(ctBuf[:0], nonce[:], in.Body, nil)
				if _, err := aead.Open(ptBuf[:0], nonce[:], ct, nil); err != nil {
					b.Fatal(err)
				}
			}
			envelope := func() {
				in.Seq++
				body, md, err := Seal(in)
				if err != nil {
					b.Fatal(err)
				}
				e, err := Parse(md)
				if err != nil {
					b.Fatal(err)
				}
				if _, _, err := e.Open(aead, body, md); err != nil {
					b.Fatal(err)
				}
			}
			timed := func(n int, f func()) time.Duration {
				start := time.Now()
				for range n {
					f()
				}
				return time.Since(start)
			}
			envelope()
			rawAlloc()
			rawReuse()

			// The order alternates too: whichever loop runs first after the other's
			// allocations would otherwise pay more of the garbage collector's work.
			chunk := max(1, (1<<20)/bc.size)
			var allocTime, reuseTime time.Duration
			baselines := func(n int, allocFirst bool) {
				b.StopTimer()
				if allocFirst {
					allocTime += timed(n, rawAlloc)
					reuseTime += timed(n, rawReuse)
				} else {
					reuseTime += timed(n, rawReuse)
					allocTime += timed(n, rawAlloc)
				}
				b.StartTimer()
			}
			b.SetBytes(int64(bc.size))
			b.ReportAllocs()
			b.ResetTimer()
			for i, done := 0, 0; done < b.N; i, done = i+1, done+chunk {
				n := min(chunk, b.N-done)
				if i%2 == 1 {
					baselines(n, i%4 == 1)
				}
				for range n {
					envelope()
				}
				if i%2 == 0 {
					baselines(n, i%4 == 0)
				}
			}
			b.StopTimer()
			envTime := b.Elapsed().Seconds()
			b.ReportMetric(allocTime.Seconds()/envTime, "ratio-vs-raw-gcm")
			b.ReportMetric(reuseTime.Seconds()/envTime, "ratio-vs-raw-gcm-reuse")
			b.ReportMetric(float64(bc.size)*float64(b.N)/allocTime.Seconds()/1e6, "raw-MB/s")
		})
	}
}
