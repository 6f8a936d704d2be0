package fpe

import (
	"testing"
	"time"
)

// BenchmarkEncryptCard encrypts a 16-digit card. Besides encodes/s it reports
// x-bigint: how many times faster than FF1 with math/big numerals (the usual
// way, and capitalone/fpe's) over the same digits, measured in the same run.
func BenchmarkEncryptCard(b *testing.B) {
	c, err := NewFF1(mustHex(b, nistKey256), 10)
	if err != nil {
		b.Fatal(err)
	}
	const card = "4111 1111 1111 1111"
	tweak := []byte("orders.card_number")
	for _, o := range []CardOptions{{}, {KeepBIN: true, Luhn: true}, {KeepBIN: true, KeepLast4: true}} {
		b.Run(o.testName(), func(b *testing.B) {
			encrypt := func() {
				if _, err := EncryptCard(c, card, tweak, o); err != nil {
					b.Fatal(err)
				}
			}
			for b.Loop() {
				encrypt()
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "encodes/s")
			// The card tweak adds 2 bytes and the kept digits to the caller's.
			x, t := make([]uint16, encrypted(16, o)), make([]byte, len(tweak)+2+16-encrypted(16, o))
			b.ReportMetric(speedup(encrypt, func() { c.cryptBig(x, t, false) }), "x-bigint")
		})
	}
}

// speedup times fast and base in alternating batches and compares their best
// batches, which a busy machine disturbs least.
func speedup(fast, base func()) float64 {
	best := func(f func()) time.Duration {
		start := time.Now()
		for range 100 {
			f()
		}
		return time.Since(start)
	}
	bf, bb := time.Duration(1<<62), time.Duration(1<<62)
	for range 30 {
		bf, bb = min(bf, best(fast)), min(bb, best(base))
	}
	return float64(bb) / float64(bf)
}

func BenchmarkDecryptCard(b *testing.B) {
	c, _ := NewFF1(mustHex(b, nistKey256), 10)
	o := CardOptions{KeepBIN: true, Luhn: true}
	enc, err := EncryptCard(c, "4111 1111 1111 1111", nil, o)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := DecryptCard(c, enc, nil, o); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "decodes/s")
}
