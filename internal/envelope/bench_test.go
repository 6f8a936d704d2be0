package envelope

import (
	"strings"
	"testing"
	"time"

	"github.com/pubcrypt/pubcrypt/internal/wire"
)

// BenchmarkSizes measures one send and one receive (Seal, then Parse and Open) of a
// message of each size from 256 B to 1 MiB, against raw AES-256-GCM Seal+Open of the
// same body under the same key, in the same run. Modes:
//
//   - raw-gcm: aead.Seal(nil, ...) + aead.Open(nil, ...) alone: raw GCM into freshly
//     allocated buffers, as the envelope must (its ciphertext and plaintext belong to the
//     caller)
//   - envelope: a body without producer metadata
//   - envelope+metadata: with three clear metadata entries (content type, trace ID, file
//     name), all bound into the associated data
//   - envelope+sensitive: the same entries, the file name encrypted with the body
//
// Each envelope mode alternates with its own raw GCM loop in chunks of about 1 MiB, so
// that CPU frequency changes and neighbours' load hit both alike: ratio-vs-raw-gcm is
// the raw loop's time over the envelope's for the same messages (1 = as fast as raw
// GCM). msgs/s counts seal+open pairs; allocs/op are the envelope's.
func BenchmarkSizes(b *testing.B) {
	sizes := []struct {
		name string
		n    int
	}{{"256B", 256}, {"1KiB", 1 << 10}, {"4KiB", 4 << 10}, {"16KiB", 16 << 10}, {"64KiB", 64 << 10}, {"256KiB", 256 << 10}, {"1MiB", 1 << 20}}
	metadata := map[string]string{
		"content-type": "application/octet-stream",
		"trace-id":     "4bf92f3577b34da6a3ce929d0e0e4736",
		"filename":     "report.pdf",
	}
	modes := []struct {
		name      string
		metadata  map[string]string
		sensitive []string
	}{
		{"envelope", nil, nil},
		{"envelope+metadata", metadata, nil},
		{"envelope+sensitive", metadata, []string{"filename"}},
	}
	aead := newAEAD(testKey("bench"))
	nonce := wire.Nonce(1)
	for _, size := range sizes {
		body := make([]byte, size.n)
		rawAlloc := func() {
			ct := aead.Seal(nil, nonce[:], body, nil)
			if _, err := aead.Open(nil, nonce[:], ct, nil); err != nil {
				b.Fatal(err)
			}
		}
		b.Run("raw-gcm/"+size.name, func(b *testing.B) {
			b.SetBytes(int64(size.n))
			b.ReportAllocs()
			for b.Loop() {
				rawAlloc()
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		})
		for _, mode := range modes {
			b.Run(mode.name+"/"+size.name, func(b *testing.B) {
				in := SealInput{
					AEAD:      aead,
					KeyID:     "orders",
					Wrapped:   "vault:v1:" + strings.Repeat("A", 80), // the size of a Vault-wrapped 256-bit key
					Body:      body,
					Metadata:  mode.metadata,
					Sensitive: mode.sensitive,
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
				envelope()
				rawAlloc()

				chunk := max(1, (1<<20)/size.n)
				var rawTime time.Duration
				b.SetBytes(int64(size.n))
				b.ReportAllocs()
				b.ResetTimer()
				for i, done := 0, 0; done < b.N; i, done = i+1, done+chunk {
					n := min(chunk, b.N-done)
					// The order alternates too: whichever loop runs first after the
					// other's allocations would otherwise pay more of the garbage
					// collector's work.
					if i%2 == 1 {
						b.StopTimer()
						rawTime += timed(n, rawAlloc)
						b.StartTimer()
					}
					for range n {
						envelope()
					}
					if i%2 == 0 {
						b.StopTimer()
						rawTime += timed(n, rawAlloc)
						b.StartTimer()
					}
				}
				b.StopTimer()
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
				b.ReportMetric(rawTime.Seconds()/b.Elapsed().Seconds(), "ratio-vs-raw-gcm")
			})
		}
	}
}

func timed(n int, f func()) time.Duration {
	start := time.Now()
	for range n {
		f()
	}
	return time.Since(start)
}
