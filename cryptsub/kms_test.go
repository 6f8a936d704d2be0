package cryptsub_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/pubcrypt/pubcrypt/cryptsub"
	"github.com/pubcrypt/pubcrypt/crypttopic"
	"github.com/pubcrypt/pubcrypt/internal/devkms"
	"github.com/pubcrypt/pubcrypt/keyring"
)

// TestRoundTrip10000AWSKMS: the key-encryption key is an AWS KMS key (the local-kms
// emulator, a real KMS API server), opened by URL through gocloud.dev/secrets; no Vault
// is involved. 10,000 messages over Kafka round-trip byte-equal with at most 2 KMS calls
// per side: the data key is generated here and wrapped once, then reused (DataKeys), and
// unwrapped once by the receiver (UnwrapCache).
func TestRoundTrip10000AWSKMS(t *testing.T) {
	const n, topic = 10000, "roundtrip_awskms"
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	kms, err := devkms.Start(ctx, devkms.Options{})
	if err != nil {
		t.Fatalf("local-kms: %v", err)
	}
	t.Cleanup(func() { _ = kms.Stop() })
	for _, kv := range kms.Env() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	key, err := kms.CreateKey(ctx, "pubcrypt round trip")
	if err != nil {
		t.Fatal(err)
	}
	kek := kms.KeeperURL(key.ID)
	open := func() *keyring.Keeper {
		k, err := keyring.OpenKeeper(ctx, kek, keyring.KeeperOptions{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = k.Close() })
		return k
	}
	send, recv := open(), open()

	b := newKafka(t, topic)
	sub, err := cryptsub.Open(ctx, "kafka://g-"+topic+"?topic="+topic+"&offset=oldest", cryptsub.Options{Keyring: recv})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Shutdown(context.Background())
	top, err := crypttopic.Open(ctx, "kafka://"+topic, crypttopic.Options{Keyring: send})
	if err != nil {
		t.Fatal(err)
	}
	sendAll(t, ctx, top, n)
	if err := top.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	receiveAll(t, ctx, sub, n)
	t.Logf("%d messages with an AWS KMS key (%s): %d KMS calls on the send side, %d on the receive side", n, send.KeyID(), send.Calls(), recv.Calls())
	if send.Calls() > 2 || recv.Calls() > 2 {
		t.Errorf("KMS calls: send %d, receive %d; want ≤ 2 per side", send.Calls(), recv.Calls())
	}
	for _, r := range readRaw(t, b, topic, n) {
		assertNoPlaintext(t, r)
	}
}
