package fields

import (
	"context"
	"testing"
	"time"

	"github.com/pubcrypt/pubcrypt/internal/envelope"
	"github.com/pubcrypt/pubcrypt/keyring"
)

// BenchmarkProtectOpen measures one Protect and one Open of the purchase message per
// policy, with the key service replaced by the in-process fake (so transit costs a local
// AES-GCM, not a network round trip: the lead's real-Vault benchmark measures that).
//
// ratio-vs-body-envelope compares with encrypting the whole body with the v1 envelope
// (DataKeys.Take, envelope.Seal, Parse, UnwrapCache.Get, Open) in the same run: what
// field-level encryption costs over making the whole message unreadable.
func BenchmarkProtectOpen(b *testing.B) {
	ctx := context.Background()
	for _, bc := range []struct{ name, policy string }{
		{"envelope-fields", "name=envelope,address=envelope,card_number=envelope,amount=envelope,items[].sku=envelope"},
		{"transit-fields", "name=transit,address=transit,card_number=transit,amount=transit,items[].sku=transit"},
		{"mixed", "name=transit,address=envelope,card_number=fpe(bin,luhn),amount=transit,items[].sku=deterministic"},
		{"mac-only", ""},
		{"deny-by-default", "default=envelope;keep=id,currency,items[].sku;**.card_number=fpe(bin,luhn)"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			e := newTestEnv(b)
			in := []Input{{Body: []byte(purchaseJSON), Metadata: purchaseMeta, Policy: mustPolicy(b, bc.policy)}}
			fields := func() {
				out, err := e.sealer.Protect(ctx, in)
				if err != nil {
					b.Fatal(err)
				}
				if _, _, err := e.opener.Open(ctx, out[0].Body, out[0].Metadata); err != nil {
					b.Fatal(err)
				}
			}
			cache := keyring.NewUnwrapCache(e.kms, keyring.CacheOptions{})
			whole := func() {
				key, seq, err := e.dk.Take(ctx, len(purchaseJSON))
				if err != nil {
					b.Fatal(err)
				}
				aead, _ := key.AEAD()
				body, md, err := envelope.Seal(envelope.SealInput{AEAD: aead, KeyID: key.KeyID, Wrapped: key.Wrapped, Seq: seq, Body: []byte(purchaseJSON), Metadata: purchaseMeta})
				if err != nil {
					b.Fatal(err)
				}
				env, err := envelope.Parse(md)
				if err != nil {
					b.Fatal(err)
				}
				k, err := cache.Get(ctx, env.KeyID, env.Wrapped)
				if err != nil {
					b.Fatal(err)
				}
				aead, _ = k.AEAD()
				if _, _, err := env.Open(aead, body, md); err != nil {
					b.Fatal(err)
				}
			}
			b.SetBytes(int64(len(purchaseJSON)))
			b.ReportAllocs()
			for b.Loop() {
				fields()
			}
			b.ReportMetric(ratio(fields, whole), "ratio-vs-body-envelope")
		})
	}
}

// ratio times f and base in alternating batches and compares their best batches, which
// a busy machine disturbs least.
func ratio(f, base func()) float64 {
	best := func(g func()) time.Duration {
		start := time.Now()
		for range 50 {
			g()
		}
		return time.Since(start)
	}
	bf, bb := time.Duration(1<<62), time.Duration(1<<62)
	for range 20 {
		bf, bb = min(bf, best(f)), min(bb, best(base))
	}
	return float64(bf) / float64(bb)
}
