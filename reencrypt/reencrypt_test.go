package reencrypt_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"gocloud.dev/pubsub"

	"github.com/pubcrypt/pubcrypt/cryptsub"
	"github.com/pubcrypt/pubcrypt/crypttopic"
	"github.com/pubcrypt/pubcrypt/fault"
	"github.com/pubcrypt/pubcrypt/internal/devkafka"
	"github.com/pubcrypt/pubcrypt/internal/devvault"
	"github.com/pubcrypt/pubcrypt/internal/purchase"
	"github.com/pubcrypt/pubcrypt/keyring"
	"github.com/pubcrypt/pubcrypt/reencrypt"
)

var vaultServer *devvault.Server

const (
	dataKey = "pubcrypt"
	detKey  = "pubcrypt-det"
	fpeKey  = "pubcrypt-fpe"
)

func TestMain(m *testing.M) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	srv, err := devvault.Start(ctx, devvault.Options{Keys: []string{dataKey}})
	if err == nil {
		err = srv.CreateFieldKeys(ctx, detKey, fpeKey)
	}
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "FAIL: cannot start the Vault dev server these tests need:", err)
		if srv != nil {
			_ = srv.Stop()
		}
		os.Exit(1)
	}
	vaultServer = srv
	code := m.Run()
	_ = srv.Stop()
	os.Exit(code)
}

func newVault(t *testing.T) *keyring.Vault {
	t.Helper()
	c, err := vaultServer.Client()
	if err != nil {
		t.Fatal(err)
	}
	v, err := keyring.NewVault(keyring.VaultOptions{Client: c, Key: dataKey})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = v.Close() })
	return v
}

// fieldPolicy protects a purchase in every mode that a rotation touches; denyPolicy
// protects everything but the order ID, the card in FPE.
const (
	fieldPolicy = "name=transit,address=deterministic,card_number=fpe(bin,luhn),items[].sku=envelope"
	denyPolicy  = "default=transit; keep=id; card_number=fpe(bin,luhn)"
)

// TestAfterTwoRotations: a retained topic holds whole-body messages (some with sensitive
// metadata) and field-level messages, all under version 1 of every key. After two
// rotations, Copy re-protects them onto a new topic; min_decryption_version is raised to
// 3; the new topic decrypts fully and byte for byte, under version 3, and the old topic
// fails with ErrVersionTooOld. Real Vault, real Kafka protocol (kfake).
func TestAfterTwoRotations(t *testing.T) {
	const n = 60
	kafka, err := devkafka.Start(devkafka.Options{Topics: []string{"retained", "retained_v3"}})
	if err != nil {
		t.Fatal(err)
	}
	defer kafka.Close()
	t.Setenv("KAFKA_BROKERS", kafka.Addrs[0])
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	kr := newVault(t)
	sensitive := []string{"filename"}
	fk := crypttopic.FieldKeys{Deterministic: detKey, FPE: fpeKey}
	old, err := crypttopic.Open(ctx, "kafka://retained", crypttopic.Options{Keyring: kr, SensitiveMetadata: sensitive, FieldKeys: fk})
	if err != nil {
		t.Fatal(err)
	}
	type sent struct {
		body []byte
		md   map[string]string
	}
	want := map[string]sent{}
	gen := purchase.NewGenerator(13)
	for i := range n {
		p := gen.Next()
		body, _ := json.Marshal(p)
		md := map[string]string{"order": p.ID}
		switch i % 4 {
		case 0: // whole body, a sensitive entry
			md["filename"] = "secret-" + p.ID + ".json"
		case 1: // fields, an allow-list
			md[crypttopic.ProtectKey] = fieldPolicy
		case 2: // fields, deny by default
			md[crypttopic.ProtectKey] = denyPolicy
		}
		if err := old.Send(ctx, &pubsub.Message{Body: body, Metadata: md}); err != nil {
			t.Fatal(err)
		}
		delete(md, crypttopic.ProtectKey)
		want[p.ID] = sent{body, md}
	}
	if err := old.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{dataKey, detKey, fpeKey} {
		for range 2 {
			if err := vaultServer.RotateKey(ctx, k); err != nil {
				t.Fatal(err)
			}
		}
	}

	src, err := cryptsub.Open(ctx, "kafka://reencrypt?topic=retained&offset=oldest", cryptsub.Options{Keyring: kr})
	if err != nil {
		t.Fatal(err)
	}
	dst, err := crypttopic.Open(ctx, "kafka://retained_v3", crypttopic.Options{Keyring: kr, SensitiveMetadata: sensitive, FieldKeys: fk})
	if err != nil {
		t.Fatal(err)
	}
	calls := kr.Calls()
	st, err := reencrypt.Copy(ctx, src, dst, reencrypt.Options{Idle: 3 * time.Second, Sensitive: sensitive})
	if err != nil {
		t.Fatalf("Copy: %v (after %d)", err, st.Copied)
	}
	_ = src.Shutdown(ctx)
	if err := dst.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	raw, err := kafka.ReadRaw(ctx, "retained", n)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("reencrypt: %d of %d retained records copied (by old key version %v), %d Vault calls", st.Copied, len(raw), st.ByVersion, kr.Calls()-calls)
	if st.Copied != len(raw) || st.ByVersion[1] != n {
		t.Fatalf("copied %d (by version %v), the source holds %d", st.Copied, st.ByVersion, len(raw))
	}

	for _, k := range []string{dataKey, detKey, fpeKey} {
		if err := vaultServer.SetMinDecryptionVersion(ctx, k, 3); err != nil {
			t.Fatal(err)
		}
	}
	// The new topic: every message, byte for byte, under version 3.
	got := readAll(t, ctx, "retained_v3", n)
	for _, r := range got {
		if r.err != nil {
			t.Fatalf("new topic: %v", r.err)
		}
		w, ok := want[r.m.Metadata["order"]]
		if !ok || !bytes.Equal(r.m.Body, w.body) || !maps.Equal(r.m.Metadata, w.md) {
			t.Fatalf("new topic: order %s: body %s metadata %v; want %s %v", r.m.Metadata["order"], r.m.Body, r.m.Metadata, w.body, w.md)
		}
		if r.info.KeyVersion != 3 {
			t.Errorf("order %s under key version %d, want 3", r.m.Metadata["order"], r.info.KeyVersion)
		}
	}
	// Nothing of the sensitive entries or the protected values is in clear on the new topic.
	newRaw, err := kafka.ReadRaw(ctx, "retained_v3", n)
	if err != nil {
		t.Fatal(err)
	}
	manifests := map[string]int{}
	for _, rec := range newRaw {
		all := string(rec.Value)
		for _, h := range rec.Headers {
			all += h.Key + "=" + string(h.Value) + "\n"
			if h.Key == "pubcrypt-fields" {
				manifests[string(h.Value[:2])]++
			}
		}
		if strings.Contains(all, "secret-") || strings.Contains(all, "vault:v1:") {
			t.Fatalf("new topic record holds a sensitive entry or a version-1 value: %.300s", all)
		}
	}
	// Protected as they were: allow-list messages with a v1 manifest, deny-by-default
	// ones with a v2 manifest, the others whole-body.
	if manifests["v1"] != n/4 || manifests["v2"] != n/4 {
		t.Errorf("manifests on the new topic: %v, want %d v1 and %d v2", manifests, n/4, n/4)
	}
	// The old topic: every message refused, the version retired.
	for _, r := range readAll(t, ctx, "retained", n) {
		if !errors.Is(r.err, keyring.ErrVersionTooOld) {
			t.Fatalf("old topic after min_decryption_version=3: %v, want ErrVersionTooOld", r.err)
		}
	}
}

type received struct {
	m    *pubsub.Message
	info cryptsub.Info
	err  error
}

// readers numbers the consumer groups of readAll, so that each call reads from the start.
var readers atomic.Int64

// readAll reads n messages of topic with a keyring of its own (nothing cached).
func readAll(t *testing.T, ctx context.Context, topic string, n int) []received {
	t.Helper()
	sub, err := cryptsub.Open(ctx, fmt.Sprintf("kafka://check-%s-%d?topic=%s&offset=oldest", topic, readers.Add(1), topic), cryptsub.Options{Keyring: newVault(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Shutdown(ctx)
	var out []received
	for len(out) < n {
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		m, info, err := sub.ReceiveInfo(rctx)
		cancel()
		var de *cryptsub.DecryptError
		switch {
		case errors.As(err, &de):
			de.Message.Ack()
			m = de.Message // raw, its clear metadata readable
		case err != nil:
			t.Fatalf("%s: receive after %d: %v", topic, len(out), err)
		default:
			m.Ack()
		}
		out = append(out, received{m, info, err})
	}
	return out
}

// TestSensitiveNeverInClear: a message whose metadata travelled inside the ciphertext is
// refused, a fault of that message, unless the destination protects that entry too.
func TestSensitiveNeverInClear(t *testing.T) {
	m := &pubsub.Message{Body: []byte("x"), Metadata: map[string]string{"filename": "secret.txt"}}
	info := cryptsub.Info{Encrypted: true, Sensitive: []string{"filename"}}
	if _, err := reencrypt.Message(m, info, nil); !errors.Is(err, reencrypt.ErrSensitive) || fault.ClassOf(err) != fault.Message {
		t.Fatalf("sensitive entry, destination in clear: %v; want ErrSensitive, a message fault", err)
	}
	if strings.Contains(fmt.Sprint(reencrypt.Message(m, info, nil)), "secret.txt") {
		t.Error("the error holds the entry's value")
	}
	out, err := reencrypt.Message(m, info, []string{"filename"})
	if err != nil || out.Metadata["filename"] != "secret.txt" || out.Metadata[crypttopic.ProtectKey] != "" {
		t.Fatalf("sensitive entry the destination protects: %v %v", out, err)
	}
	out.Metadata["x"] = "y"
	if _, ok := m.Metadata["x"]; ok {
		t.Error("Message shares the metadata map with the received message")
	}
}

// TestSubjectsStayForgettable: a retained topic holds messages of two customers under a
// policy with a subject (each customer's values under its own key) beside messages of the
// shared keys. After the shared keys are rotated, Copy re-protects the topic: every copy
// of a customer's message is again under that customer's key, so forgetting the customer
// afterwards makes its copies fail with ErrShredded too, while the other customer's and
// the shared-key messages decrypt byte for byte. Real Vault, real Kafka protocol (kfake).
func TestSubjectsStayForgettable(t *testing.T) {
	const n = 30
	kafka, err := devkafka.Start(devkafka.Options{Topics: []string{"subj", "subj_v2"}})
	if err != nil {
		t.Fatal(err)
	}
	defer kafka.Close()
	t.Setenv("KAFKA_BROKERS", kafka.Addrs[0])
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	kr := newVault(t)
	fk := crypttopic.FieldKeys{Deterministic: detKey, FPE: fpeKey}
	const subjectPolicy = "subject=customer_id; name=transit,card_number=fpe(bin,luhn)"
	old, err := crypttopic.Open(ctx, "kafka://subj", crypttopic.Options{Keyring: kr, FieldKeys: fk})
	if err != nil {
		t.Fatal(err)
	}
	customer := func(i int) string { return fmt.Sprintf("%s-%d", t.Name(), i%2) }
	want := map[string][]byte{}
	ofCustomer := map[string]int{}
	gen := purchase.NewGenerator(29)
	for i := range n {
		p := gen.Next()
		var doc map[string]any
		raw, _ := json.Marshal(p)
		_ = json.Unmarshal(raw, &doc)
		md := map[string]string{"order": p.ID}
		if i%3 != 2 {
			doc["customer_id"] = customer(i)
			md[crypttopic.ProtectKey] = subjectPolicy
			ofCustomer[p.ID] = i % 2
		} else {
			md[crypttopic.ProtectKey] = fieldPolicy
			ofCustomer[p.ID] = -1
		}
		body, _ := json.Marshal(doc)
		if err := old.Send(ctx, &pubsub.Message{Body: body, Metadata: md}); err != nil {
			t.Fatal(err)
		}
		want[p.ID] = body
	}
	if err := old.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{dataKey, detKey, fpeKey} {
		if err := vaultServer.RotateKey(ctx, k); err != nil {
			t.Fatal(err)
		}
	}
	src, err := cryptsub.Open(ctx, "kafka://reencrypt-subj?topic=subj&offset=oldest", cryptsub.Options{Keyring: kr})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Shutdown(ctx)
	dst, err := crypttopic.Open(ctx, "kafka://subj_v2", crypttopic.Options{Keyring: kr, FieldKeys: fk})
	if err != nil {
		t.Fatal(err)
	}
	st, err := reencrypt.Copy(ctx, src, dst, reencrypt.Options{Idle: 3 * time.Second})
	if err != nil || st.Copied != n {
		t.Fatalf("Copy = %+v, %v; want %d copied", st, err, n)
	}
	if err := dst.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}

	subjects, err := keyring.NewSubjects(kr, keyring.SubjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	names, err := subjects.KeyNames(ctx, []string{customer(0), customer(1)})
	if err != nil {
		t.Fatal(err)
	}
	latest, err := kr.KeyInfo(ctx, dataKey)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range readAll(t, ctx, "subj_v2", n) {
		if r.err != nil {
			t.Fatalf("copy before Forget: %v", r.err)
		}
		id := r.m.Metadata["order"]
		if !bytes.Equal(r.m.Body, want[id]) {
			t.Fatalf("copy of %s decrypted to other bytes", id)
		}
		if c := ofCustomer[id]; c >= 0 && r.info.KeyID != names[c] {
			t.Fatalf("copy of customer %d's %s is under key %q, want its subject key %q", c, id, r.info.KeyID, names[c])
		} else if c < 0 && r.info.KeyVersion != latest.LatestVersion {
			t.Fatalf("copy of shared-key message %s under version %d, want the latest, %d", id, r.info.KeyVersion, latest.LatestVersion)
		}
	}
	if _, err := subjects.Forget(ctx, customer(0)); err != nil {
		t.Fatal(err)
	}
	shredded := 0
	for _, r := range readAll(t, ctx, "subj_v2", n) {
		id := r.m.Metadata["order"]
		switch {
		case errors.Is(r.err, keyring.ErrShredded) && ofCustomer[id] == 0:
			shredded++
		case r.err != nil:
			t.Fatalf("copy of %s (customer %d) after Forget: %v", id, ofCustomer[id], r.err)
		case ofCustomer[id] == 0:
			t.Fatalf("copy of the forgotten customer's %s decrypted", id)
		case !bytes.Equal(r.m.Body, want[id]):
			t.Fatalf("copy of %s decrypted to other bytes", id)
		}
	}
	if shredded != n/3 {
		t.Fatalf("%d copies shredded, want %d", shredded, n/3)
	}
}
