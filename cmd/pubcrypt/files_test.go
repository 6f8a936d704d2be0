package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pubcrypt/pubcrypt/internal/broker"
	"github.com/pubcrypt/pubcrypt/internal/devkafka"
	"github.com/pubcrypt/pubcrypt/internal/devvault"
	"github.com/pubcrypt/pubcrypt/keyring"
)

// TestFileChunksTamperedOnTheTopic sends a file through a real Kafka broker with a real
// Vault, then replays its chunks onto fresh topics with one chunk dropped, reordered,
// altered or delivered again altered: each replay ends with no file in destination/ (no
// partial state either) and an error that names the file. A chunk delivered again
// unchanged is a redelivery (brokers deliver at least once): the file arrives whole. A
// transfer whose final chunk never comes is kept, encrypted, for a later run.
func TestFileChunksTamperedOnTheTopic(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	vault, err := devvault.Start(ctx, devvault.Options{Keys: []string{demoKey}})
	if err != nil {
		t.Fatalf("Vault dev server: %v", err)
	}
	defer vault.Stop()
	scenarios := map[string]func([]*kgo.Record) []*kgo.Record{
		"dropped":    func(r []*kgo.Record) []*kgo.Record { return append(r[:2:2], r[3:]...) },
		"duplicated": func(r []*kgo.Record) []*kgo.Record { return append(r[:3:3], r[2:]...) },
		"duplicated altered": func(r []*kgo.Record) []*kgo.Record {
			c := *r[2]
			c.Value = bytes.Clone(c.Value)
			c.Value[7] ^= 0x10
			return append(append(r[:3:3], &c), r[3:]...)
		},
		"reordered": func(r []*kgo.Record) []*kgo.Record {
			out := append([]*kgo.Record(nil), r...)
			out[2], out[3] = out[3], out[2]
			return out
		},
		"altered": func(r []*kgo.Record) []*kgo.Record {
			out := append([]*kgo.Record(nil), r...)
			c := *out[2]
			c.Value = bytes.Clone(c.Value)
			c.Value[100] ^= 0x01
			out[2] = &c
			return out
		},
		"final chunk dropped": func(r []*kgo.Record) []*kgo.Record { return r[:len(r)-1] },
	}
	var topics []string
	for name := range scenarios {
		topics = append(topics, strings.ReplaceAll(name, " ", "_"))
	}
	kafka, err := devkafka.Start(devkafka.Options{Topics: append(topics, "files")})
	if err != nil {
		t.Fatal(err)
	}
	defer kafka.Close()
	t.Setenv(broker.EnvKafkaBrokers, kafka.Addrs[0])
	c, _ := vault.Client()
	kr, err := keyring.NewVault(keyring.VaultOptions{Client: c, Key: demoKey})
	if err != nil {
		t.Fatal(err)
	}

	src := t.TempDir()
	const name = "payroll-2026-11.bin"
	data := make([]byte, 5*4096+123)
	_, _ = rand.Read(data)
	if err := os.WriteFile(filepath.Join(src, name), data, 0o600); err != nil {
		t.Fatal(err)
	}
	top, err := broker.OpenTopic(ctx, "kafka://files")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sendFiles(ctx, kr, top, []string{filepath.Join(src, name)}, 4096, nil); err != nil {
		t.Fatal(err)
	}
	_ = top.Shutdown(ctx)

	cl, err := kgo.NewClient(kgo.SeedBrokers(kafka.Addrs...), kgo.ConsumeTopics("files"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var orig []*kgo.Record
	for len(orig) < 7 { // header chunk + 6 data chunks
		cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) { orig = append(orig, r) })
		if ctx.Err() != nil {
			t.Fatal("could not read the file's chunks back")
		}
	}

	for scenario, mutate := range scenarios {
		t.Run(scenario, func(t *testing.T) {
			topic := strings.ReplaceAll(scenario, " ", "_")
			var recs []*kgo.Record
			for _, r := range mutate(orig) {
				recs = append(recs, &kgo.Record{Topic: topic, Value: r.Value, Headers: r.Headers})
			}
			if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
				t.Fatal(err)
			}
			dst := t.TempDir()
			sub, err := broker.OpenSubscription(ctx, "kafka://g-"+topic+"?topic="+topic+"&offset=oldest")
			if err != nil {
				t.Fatal(err)
			}
			defer shutdown(sub)
			var out bytes.Buffer
			got, failed, err := receiveFiles(ctx, kr, sub, dst, receiveLimits{stop: stopFlags{idle: 3 * time.Second}}, &out, nil)
			if err != nil {
				t.Fatal(err)
			}
			entries, _ := os.ReadDir(dst)
			switch scenario {
			case "duplicated":
				if got != 1 || failed != 0 {
					t.Fatalf("%s chunk: %d received, %d refused; want 1, 0\n%s", scenario, got, failed, out.String())
				}
				if b, err := os.ReadFile(filepath.Join(dst, name)); err != nil || !bytes.Equal(b, data) {
					t.Fatalf("%s chunk: file differs: %v", scenario, err)
				}
			case "final chunk dropped":
				// Not refused: the transfer is in progress, its chunks kept (ciphertext)
				// for the run that gets the final chunk.
				if got != 0 || failed != 0 || len(entries) != 1 || !strings.HasPrefix(entries[0].Name(), ".pubcrypt-partial-") ||
					!strings.Contains(out.String(), "in progress") {
					t.Fatalf("%s chunk: %d received, %d refused, destination %v\n%s", scenario, got, failed, entries, out.String())
				}
				spool, _ := os.ReadFile(filepath.Join(dst, entries[0].Name()))
				for i := 0; i+64 <= len(data); i += 64 {
					if bytes.Contains(spool, data[i:i+64]) {
						t.Fatalf("the partial state holds plaintext (offset %d)", i)
					}
				}
			default:
				if got != 0 || failed != 1 || len(entries) != 0 {
					t.Fatalf("%s chunk: %d received, %d refused, %d entries in destination; want 0, 1, 0\n%s", scenario, got, failed, len(entries), out.String())
				}
				if !strings.Contains(out.String(), name) {
					t.Fatalf("%s chunk: the error does not name the file: %s", scenario, out.String())
				}
			}
			t.Logf("%s chunk: %s", scenario, strings.TrimSpace(out.String()))
		})
	}
}
