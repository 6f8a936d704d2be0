package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pubcrypt/pubcrypt/internal/broker"
	"github.com/pubcrypt/pubcrypt/internal/devbrokers"
	"github.com/pubcrypt/pubcrypt/internal/devkafka"
	"github.com/pubcrypt/pubcrypt/internal/devvault"
	"github.com/pubcrypt/pubcrypt/internal/purchase"
)

// storyURLs are the only things that change from one broker to another.
type storyURLs struct {
	plainTopic, plainSub         string // purchases, read by the encryptor
	encTopic, encSub, encPeekSub string // purchases_encrypted, read by the consumer and by an admin
	largeTopic, largeSub         string // purchases_large_encrypted
}

// storyBrokers start a broker and say the URLs of the story on it.
var storyBrokers = []struct {
	name  string
	start func(t *testing.T) storyURLs
}{
	{"kafka", kafkaStory("kafka")},
	{"kgo", kafkaStory("kgo")},
	{"gcppubsub-emulator", func(t *testing.T) storyURLs {
		ctx := context.Background()
		emu, err := devbrokers.StartPubSubEmulator(ctx)
		if err != nil {
			t.Fatalf("Pub/Sub emulator: %v", err)
		}
		t.Cleanup(emu.Stop)
		t.Setenv("PUBSUB_EMULATOR_HOST", emu.HostPort)
		const project = "pubcrypt-demo"
		subs := map[string][]string{topicPlain: {"encryptor"}, topicEncrypted: {"consumer", "admin"}, topicLarge: {"files"}}
		for topic, names := range subs {
			if err := emu.CreateTopic(ctx, project, topic); err != nil {
				t.Fatal(err)
			}
			for _, n := range names {
				// A message handed to a pull that was still open when the previous command
				// stopped comes back after the ack deadline: keep it short so the story
				// does not wait a minute for it.
				if err := emu.CreateSubscription(ctx, project, n, topic, 10*time.Second); err != nil {
					t.Fatal(err)
				}
			}
		}
		top := func(n string) string { return "gcppubsub://projects/" + project + "/topics/" + n }
		sub := func(n string) string { return "gcppubsub://projects/" + project + "/subscriptions/" + n }
		return storyURLs{plainTopic: top(topicPlain), plainSub: sub("encryptor"),
			encTopic: top(topicEncrypted), encSub: sub("consumer"), encPeekSub: sub("admin"),
			largeTopic: top(topicLarge), largeSub: sub("files")}
	}},
	{"awssqs-sns-fauxqs", func(t *testing.T) storyURLs {
		ctx := context.Background()
		t.Setenv("AWS_ACCESS_KEY_ID", "test")
		t.Setenv("AWS_SECRET_ACCESS_KEY", "test")
		t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
		f, err := devbrokers.StartFauxqs(ctx)
		if err != nil {
			t.Fatalf("fauxqs: %v", err)
		}
		t.Cleanup(f.Stop)
		queue := func(name string) (string, string) {
			u, arn, err := f.CreateQueue(ctx, name, 30*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			return u, arn
		}
		plainQ, _ := queue(topicPlain)
		largeQ, _ := queue(topicLarge)
		// The encrypted topic fans out through SNS to the consumer's and the admin's queues.
		encARN, err := f.CreateTopic(ctx, topicEncrypted)
		if err != nil {
			t.Fatal(err)
		}
		consumerQ, consumerARN := queue("consumer")
		adminQ, adminARN := queue("admin")
		for _, arn := range []string{consumerARN, adminARN} {
			if err := f.SubscribeQueue(ctx, encARN, arn); err != nil {
				t.Fatal(err)
			}
		}
		return storyURLs{plainTopic: f.SQSURL(plainQ), plainSub: f.SQSURL(plainQ),
			encTopic: f.SNSURL(encARN), encSub: f.SQSURL(consumerQ), encPeekSub: f.SQSURL(adminQ),
			largeTopic: f.SQSURL(largeQ), largeSub: f.SQSURL(largeQ)}
	}},
}

// kafkaStory starts a kfake broker for the story, reached by URLs of scheme (kafka://
// through gocloud's kafkapubsub, kgo:// through franz-go).
func kafkaStory(scheme string) func(t *testing.T) storyURLs {
	return func(t *testing.T) storyURLs {
		b, err := devkafka.Start(devkafka.Options{Topics: []string{topicPlain, topicEncrypted, topicLarge}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(b.Close)
		t.Setenv(broker.EnvKafkaBrokers, b.Addrs[0])
		k := scheme + "://"
		return storyURLs{
			plainTopic: k + topicPlain, plainSub: k + "pubcrypt-encryptor?topic=" + topicPlain + "&offset=oldest",
			encTopic: k + topicEncrypted, encSub: k + "pubcrypt-consumer?topic=" + topicEncrypted + "&offset=oldest",
			encPeekSub: k + "pubcrypt-admin?topic=" + topicEncrypted + "&offset=oldest",
			largeTopic: k + topicLarge, largeSub: k + "pubcrypt-files?topic=" + topicLarge + "&offset=oldest",
		}
	}
}

// TestSeedStoryByURL runs the seed demo with the CLI's own commands — produce, encrypt,
// rotate, produce and encrypt again, consume both key versions, send and receive files —
// on each broker, changing nothing but the URLs.
func TestSeedStoryByURL(t *testing.T) {
	for _, sb := range storyBrokers {
		t.Run(sb.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			vault, err := devvault.Start(ctx, devvault.Options{Keys: []string{demoKey}})
			if err != nil {
				t.Fatalf("Vault dev server: %v", err)
			}
			defer vault.Stop()
			if err := vault.CreateFieldKeys(ctx, demoDetKey, demoFPEKey); err != nil {
				t.Fatal(err)
			}
			for _, kv := range vault.Env() {
				k, v, _ := strings.Cut(kv, "=")
				t.Setenv(k, v)
			}
			u := sb.start(t)
			run := func(cmd func(context.Context, []string, io.Writer) error, args ...string) string {
				t.Helper()
				var out bytes.Buffer
				if err := cmd(ctx, args, &out); err != nil {
					t.Fatalf("%v: %v\n%s", args, err, out.String())
				}
				return out.String()
			}

			run(runProduce, "--topic", u.plainTopic, "--count", "10", "--seed", "1", "--quiet")
			run(runEncrypt, "--sub", u.plainSub, "--topic", u.encTopic, "--max", "10", "--idle", "30s")
			run(runRotate, "--key", demoKey, "--key", demoFPEKey)
			run(runProduce, "--topic", u.plainTopic, "--count", "10", "--seed", "2", "--quiet")
			run(runEncrypt, "--sub", u.plainSub, "--topic", u.encTopic, "--max", "10", "--idle", "30s")

			peeked := run(runPeek, "--sub", u.encPeekSub, "--max", "20", "--wait", "10s")
			if !strings.Contains(peeked, "20 message(s)") {
				t.Fatalf("admin view: want 20 messages:\n%s", peeked)
			}
			for _, seed := range []uint64{1, 2} {
				gen := purchase.NewGenerator(seed)
				for range 10 {
					p := gen.Next()
					// peek shortens long values; names and cards sit early in the body.
					if strings.Contains(peeked, p.Name) || strings.Contains(peeked, p.CardNumber) {
						t.Fatalf("admin view shows %s's name or card number:\n%s", p.ID, peeked)
					}
				}
			}
			consumed := run(runConsume, "--sub", u.encSub, "--max", "20", "--idle", "30s")
			v1, v2 := strings.Count(consumed, "[pubcrypt v1]"), strings.Count(consumed, "[pubcrypt v2]")
			if v1 != 10 || v2 != 10 {
				t.Fatalf("consumed %d messages of key version 1 and %d of version 2, want 10 and 10:\n%s", v1, v2, consumed)
			}

			src, dst := t.TempDir(), t.TempDir()
			data := make([]byte, 1<<20+17)
			_, _ = rand.Read(data)
			if err := os.WriteFile(filepath.Join(src, "ledger.bin"), data, 0o600); err != nil {
				t.Fatal(err)
			}
			run(runSendFiles, "--dir", src, "--topic", u.largeTopic)
			run(runReceiveFiles, "--dir", dst, "--sub", u.largeSub, "--max-files", "1", "--idle", "20s")
			back, err := os.ReadFile(filepath.Join(dst, "ledger.bin"))
			if err != nil || !bytes.Equal(back, data) {
				t.Fatalf("the file did not arrive intact: %v", err)
			}
			t.Logf("%s: 20 purchases encrypted by the bridge across a rotation (10 under v1, 10 under v2) and a 1 MiB file, by URL only", sb.name)
		})
	}
}
