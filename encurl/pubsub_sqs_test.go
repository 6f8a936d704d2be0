package encurl_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"gocloud.dev/pubsub"
	_ "gocloud.dev/pubsub/awssnssqs"
	_ "gocloud.dev/pubsub/gcppubsub"
	_ "gocloud.dev/pubsub/gcppubsubv2"

	"github.com/pubcrypt/pubcrypt/internal/devbrokers"
)

// The same gocloud-only application as in TestAppUnchanged, on Google's Pub/Sub emulator
// and on SQS/SNS (fauxqs): a plain URL, then the enc+ form of it; an admin reading the
// broker directly sees envelopes only.

const emuProject = "pubcrypt-encurl"

// gocloud's gcppubsub and gcppubsubv2 openers dial PUBSUB_EMULATOR_HOST once per process:
// one emulator for the process, killed by the kernel when the test binary exits.
var (
	emuOnce sync.Once
	emu     *devbrokers.Emulator
	emuErr  error
	emuRuns atomic.Int64 // names differ between runs (-count=2) on the one emulator
)

func pubsubEmulator(t *testing.T) *devbrokers.Emulator {
	t.Helper()
	emuOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if emu, emuErr = devbrokers.StartPubSubEmulator(ctx); emuErr == nil {
			os.Setenv("PUBSUB_EMULATOR_HOST", emu.HostPort)
		}
	})
	if emuErr != nil {
		t.Fatalf("cannot start the Pub/Sub emulator: %v", emuErr)
	}
	return emu
}

// checkSealed fails unless every raw message is a pubcrypt envelope without the
// application's plaintext.
func checkSealed(t *testing.T, msgs []*pubsub.Message) {
	t.Helper()
	for _, m := range msgs {
		if bytes.Contains(m.Body, []byte("Customer")) || bytes.Contains(m.Body, []byte("4111")) {
			t.Fatalf("raw message %s holds plaintext: %q", m.LoggableID, m.Body)
		}
		if m.Metadata["pubcrypt"] == "" || m.Metadata["pubcrypt-dek"] == "" {
			t.Fatalf("raw message %s is not an envelope: metadata %v", m.LoggableID, m.Metadata)
		}
	}
}

func TestAppUnchangedPubSubEmulator(t *testing.T) {
	e := pubsubEmulator(t)
	run := emuRuns.Add(1)
	for _, tc := range []struct {
		scheme string
		enc    bool // enc+ URLs, and a second subscription read as an admin would
	}{
		{"gcppubsub", false},
		{"gcppubsub", true},
		{"gcppubsubv2", false},
		{"gcppubsubv2", true},
	} {
		name := tc.scheme
		if tc.enc {
			name = "enc+" + name
		}
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			topic := fmt.Sprintf("app-%s-r%d", strings.ReplaceAll(name, "+", "-"), run)
			if err := e.CreateTopic(ctx, emuProject, topic); err != nil {
				t.Fatal(err)
			}
			for _, s := range []string{topic + "-app", topic + "-admin"} {
				if err := e.CreateSubscription(ctx, emuProject, s, topic, 0); err != nil {
					t.Fatal(err)
				}
			}
			// gcppubsubv2's projects/P/topics/T form is broken in gocloud v0.49.0 (NOTES);
			// its short form P/T is what works.
			topicURL := tc.scheme + "://projects/" + emuProject + "/topics/" + topic
			subURL := tc.scheme + "://projects/" + emuProject + "/subscriptions/" + topic + "-app"
			if tc.scheme == "gcppubsubv2" {
				topicURL = tc.scheme + "://" + emuProject + "/" + topic
				subURL = tc.scheme + "://" + emuProject + "/" + topic + "-app"
			}
			raw := subscribe(t, ctx, "gcppubsub://projects/"+emuProject+"/subscriptions/"+topic+"-admin")
			if tc.enc {
				topicURL, subURL = "enc+"+topicURL, "enc+"+subURL
			}
			if err := app(ctx, topicURL, subURL); err != nil {
				t.Fatalf("app on %s, %s: %v", topicURL, subURL, err)
			}
			got := receive(t, ctx, raw, 100)
			if tc.enc {
				checkSealed(t, got)
			} else if m := got[0]; !bytes.Contains(m.Body, []byte("Customer")) {
				t.Fatalf("plain URL: raw message %q, want the application's plaintext", m.Body)
			}
		})
	}
}

func TestAppUnchangedSQS(t *testing.T) {
	// Credentials as a deployment has them: the AWS SDK signs, fauxqs does not check.
	t.Setenv("AWS_ACCESS_KEY_ID", "test")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "test")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	f, err := devbrokers.StartFauxqs(ctx)
	cancel()
	if err != nil {
		t.Fatalf("cannot start fauxqs: %v", err)
	}
	t.Cleanup(f.Stop)
	t.Logf("fauxqs on %s, ready in %v", f.Endpoint, f.Startup.Round(time.Millisecond))

	for _, tc := range []struct {
		name     string
		enc, sns bool
	}{
		{"awssqs", false, false},
		{"enc+awssqs", true, false},
		{"awssns-to-awssqs", false, true},
		{"enc+awssns-to-enc+awssqs", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			name := "app-" + strings.ReplaceAll(tc.name, "+", "-")
			appQ, appARN, err := f.CreateQueue(ctx, name, 0)
			if err != nil {
				t.Fatal(err)
			}
			prefix := ""
			if tc.enc {
				prefix = "enc+"
			}
			topicURL, subURL := prefix+f.SQSURL(appQ), prefix+f.SQSURL(appQ)
			var raw *pubsub.Subscription
			if tc.sns {
				// SNS fans out to the application's queue and to an admin's, both with
				// raw message delivery.
				topicARN, err := f.CreateTopic(ctx, name)
				if err != nil {
					t.Fatal(err)
				}
				adminQ, adminARN, err := f.CreateQueue(ctx, name+"-admin", 0)
				if err != nil {
					t.Fatal(err)
				}
				for _, q := range []string{appARN, adminARN} {
					if err := f.SubscribeQueue(ctx, topicARN, q); err != nil {
						t.Fatal(err)
					}
				}
				topicURL, subURL = prefix+f.SNSURL(topicARN), subURL+"&raw=true"
				raw = subscribe(t, ctx, f.SQSURL(adminQ)+"&raw=true")
			}
			if err := app(ctx, topicURL, subURL); err != nil {
				t.Fatalf("app on %s, %s: %v", topicURL, subURL, err)
			}
			n := 100
			if raw == nil {
				// One queue has one reader: send more the same way and read them raw.
				raw = subscribe(t, ctx, f.SQSURL(appQ))
				top := open(t, ctx, topicURL)
				n = 10
				for i := range n {
					if err := top.Send(ctx, &pubsub.Message{Body: appBody(i), Metadata: map[string]string{"n": fmt.Sprint(i)}}); err != nil {
						t.Fatal(err)
					}
				}
			}
			got := receive(t, ctx, raw, n)
			if tc.enc {
				checkSealed(t, got)
			} else if m := got[0]; !bytes.Contains(m.Body, []byte("Customer")) {
				t.Fatalf("plain URL: raw message %q, want the application's plaintext", m.Body)
			}
		})
	}
}
