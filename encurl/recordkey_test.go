package encurl_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"gocloud.dev/pubsub"
)

// TestRecordKeyProtected: an enc+kafka topic with key_name=user protects the record key
// (docs/FORMAT.md section 3.2) without being asked to; a plain consumer of the topic sees
// equal ciphertext keys for equal users, never a user; an enc+kafka subscription with
// key_name=user gets the users back. Real Vault, kfake.
func TestRecordKeyProtected(t *testing.T) {
	const n = 20
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	top := open(t, ctx, "enc+kafka://keyed?key_name=user")
	for i := range n {
		if err := top.Send(ctx, &pubsub.Message{Body: fmt.Appendf(nil, "%d", i), Metadata: map[string]string{"user": fmt.Sprintf("user-%d", i%4)}}); err != nil {
			t.Fatal(err)
		}
	}
	raw := receive(t, ctx, subscribe(t, ctx, "kafka://keyed-raw?topic=keyed&offset=oldest"), n)
	keys := map[string]bool{}
	for _, m := range raw {
		var cm *sarama.ConsumerMessage
		if !m.As(&cm) || !strings.HasPrefix(string(cm.Key), "vault:v") || strings.Contains(string(cm.Key), "user-") {
			t.Fatalf("record key %.12q... is not protected", cm.Key)
		}
		keys[string(cm.Key)] = true
	}
	if len(keys) != 4 {
		t.Fatalf("%d distinct record keys for 4 users", len(keys))
	}
	for _, m := range receive(t, ctx, subscribe(t, ctx, "enc+kafka://keyed-reader?topic=keyed&offset=oldest&key_name=user"), n) {
		var i int
		fmt.Sscan(string(m.Body), &i)
		if m.Metadata["user"] != fmt.Sprintf("user-%d", i%4) {
			t.Fatalf("message %d: user %q", i, m.Metadata["user"])
		}
	}
}
