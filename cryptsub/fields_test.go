package cryptsub_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"gocloud.dev/pubsub"

	"github.com/pubcrypt/pubcrypt/cryptsub"
	"github.com/pubcrypt/pubcrypt/crypttopic"
	"github.com/pubcrypt/pubcrypt/internal/devvault"
	"github.com/pubcrypt/pubcrypt/internal/purchase"
	"github.com/pubcrypt/pubcrypt/keyring"
)

// mixedPolicy protects a purchase with every mode.
const mixedPolicy = "name=transit,address=envelope,card_number=fpe(bin,luhn),amount=envelope,items[].sku=deterministic"

func purchases(seed uint64, n int) ([]purchase.Purchase, [][]byte) {
	gen := purchase.NewGenerator(seed)
	ps := make([]purchase.Purchase, n)
	bodies := make([][]byte, n)
	for i := range ps {
		ps[i] = gen.Next()
		bodies[i], _ = json.Marshal(ps[i])
	}
	return ps, bodies
}

func header(r *kgo.Record, key string) string {
	for _, h := range r.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

// sendBatches sends bodies in batches of size batch, with the order ID as metadata.
func sendBatches(t *testing.T, ctx context.Context, top *crypttopic.Topic, ps []purchase.Purchase, bodies [][]byte, batch int) {
	t.Helper()
	for start := 0; start < len(bodies); start += batch {
		var msgs []*pubsub.Message
		for i := start; i < min(start+batch, len(bodies)); i++ {
			msgs = append(msgs, &pubsub.Message{Body: bodies[i], Metadata: map[string]string{"order": ps[i].ID}})
		}
		if err := top.SendBatch(ctx, msgs); err != nil {
			t.Fatal(err)
		}
	}
}

// TestFieldsPurchaseStream sends purchases with every field mode through Kafka and a real
// Vault: the raw topic shows no protected plaintext and unprotected fields unchanged, card
// numbers keep their shape, and the consumer gets every body back byte for byte.
func TestFieldsPurchaseStream(t *testing.T) {
	const topic, n = "purchases_fields", 200
	b := newKafka(t, topic)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	policy, err := crypttopic.ParseFieldPolicy(mixedPolicy)
	if err != nil {
		t.Fatal(err)
	}
	sendKeys := newVault(t, vaultServer)
	top, err := crypttopic.Open(ctx, "kafka://"+topic, crypttopic.Options{Keyring: sendKeys, Fields: policy})
	if err != nil {
		t.Fatal(err)
	}
	ps, bodies := purchases(42, n)
	sendBatches(t, ctx, top, ps, bodies, 100)
	if err := top.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d purchases in batches of 100, every mode: %d Vault calls on the send side", n, sendKeys.Calls())

	byOrder := map[string]int{}
	for i, p := range ps {
		byOrder[p.ID] = i
	}
	for _, r := range readRaw(t, b, topic, n) {
		i := byOrder[header(r, "order")]
		p := ps[i]
		for _, secret := range []string{p.Name, p.Address, p.CardNumber} {
			if bytes.Contains(r.Value, []byte(secret)) {
				t.Fatalf("raw record of %s holds a protected value in clear", p.ID)
			}
		}
		var raw purchase.Purchase
		var rawMap map[string]any
		if err := json.Unmarshal(r.Value, &rawMap); err != nil {
			t.Fatalf("raw body of %s is not JSON: %v", p.ID, err)
		}
		if rawMap["id"] != p.ID || rawMap["currency"] != p.Currency {
			t.Fatalf("unprotected fields of %s changed on the wire", p.ID)
		}
		if _, isString := rawMap["amount"].(string); !isString {
			t.Fatalf("amount of %s not protected", p.ID)
		}
		raw.CardNumber, _ = rawMap["card_number"].(string)
		if len(raw.CardNumber) != len(p.CardNumber) || raw.CardNumber[:7] != p.CardNumber[:7] ||
			raw.CardNumber[4] != '-' || !purchase.LuhnValid(raw.CardNumber) || raw.CardNumber == p.CardNumber {
			t.Fatalf("card number of %s not format-preserved: %q", p.ID, raw.CardNumber)
		}
		for j, it := range rawMap["items"].([]any) {
			item := it.(map[string]any)
			if item["name"] != p.Items[j].Name || item["sku"] == p.Items[j].SKU {
				t.Fatalf("items of %s: unprotected name changed or sku left in clear", p.ID)
			}
		}
		if header(r, "pubcrypt-fields") == "" {
			t.Fatalf("raw record of %s has no field manifest", p.ID)
		}
	}

	recvKeys := newVault(t, vaultServer)
	sub, err := cryptsub.Open(ctx, "kafka://g-fields?topic="+topic+"&offset=oldest", cryptsub.Options{Keyring: recvKeys})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Shutdown(context.Background())
	for range n {
		m, info, err := sub.ReceiveInfo(ctx)
		if err != nil {
			t.Fatal(err)
		}
		m.Ack()
		i := byOrder[m.Metadata["order"]]
		if !info.Fields || !bytes.Equal(m.Body, bodies[i]) {
			t.Fatalf("purchase %s: decrypted body differs from what was sent (fields=%t)\n got %s\nwant %s", ps[i].ID, info.Fields, m.Body, bodies[i])
		}
	}
	t.Logf("receive side: %d Vault calls for %d messages", recvKeys.Calls(), n)
}

// TestTransitFieldCallsPerMessage: with 100 messages per send batch, transit fields cost
// at most 0.02 Vault round trips per message (counted on the real client).
func TestTransitFieldCallsPerMessage(t *testing.T) {
	const topic, n = "transit_fields", 1000
	newKafka(t, topic)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	policy, _ := crypttopic.ParseFieldPolicy("name=transit,address=transit,card_number=transit")
	kr := newVault(t, vaultServer)
	top, err := crypttopic.Open(ctx, "kafka://"+topic, crypttopic.Options{Keyring: kr, Fields: policy})
	if err != nil {
		t.Fatal(err)
	}
	defer top.Shutdown(context.Background())
	ps, bodies := purchases(7, n)
	sendBatches(t, ctx, top, ps, bodies, 100)
	perMsg := float64(kr.Calls()) / n
	t.Logf("transit mode, %d messages in batches of 100: %d Vault calls, %.3f per message", n, kr.Calls(), perMsg)
	if perMsg > 0.02 {
		t.Fatalf("%.3f Vault calls per message, want ≤ 0.02", perMsg)
	}
}

// TestDeterministicFields: equal values under one rule give equal ciphertexts across
// producers; another path (another derivation context) gives another ciphertext.
func TestDeterministicFields(t *testing.T) {
	const topic = "det"
	b := newKafka(t, topic)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	policy, _ := crypttopic.ParseFieldPolicy("customer=deterministic,referrer=deterministic")
	body := []byte(`{"customer":"cust-0042","referrer":"cust-0042"}`)
	for range 2 { // two producers, each with its own keyring
		top, err := crypttopic.Open(ctx, "kafka://"+topic, crypttopic.Options{Keyring: newVault(t, vaultServer), Fields: policy})
		if err != nil {
			t.Fatal(err)
		}
		if err := top.Send(ctx, &pubsub.Message{Body: body}); err != nil {
			t.Fatal(err)
		}
		_ = top.Shutdown(ctx)
	}
	var vals [2]map[string]string
	for i, r := range readRaw(t, b, topic, 2) {
		if err := json.Unmarshal(r.Value, &vals[i]); err != nil {
			t.Fatal(err)
		}
	}
	// Not in clear (the wire format of the ciphertext is the keyring's business, not
	// this package's), and the same from both producers.
	if strings.Contains(vals[0]["customer"], "cust-0042") || vals[0]["customer"] != vals[1]["customer"] {
		t.Fatalf("same value, same rule, two producers: %q vs %q", vals[0]["customer"], vals[1]["customer"])
	}
	if vals[0]["customer"] == vals[0]["referrer"] {
		t.Fatal("same value under two paths gave the same ciphertext")
	}
	sub, err := cryptsub.Open(ctx, "kafka://g-det?topic="+topic+"&offset=oldest", cryptsub.Options{Keyring: newVault(t, vaultServer)})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Shutdown(context.Background())
	for range 2 {
		m, err := sub.Receive(ctx)
		if err != nil {
			t.Fatal(err)
		}
		m.Ack()
		if !bytes.Equal(m.Body, body) {
			t.Fatalf("got %s", m.Body)
		}
	}
}

var versionRE = regexp.MustCompile(`vault:v(\d+):`)

// TestFieldRotationMidStream rotates every Vault key in the middle of a stream without
// restarting the producer: later messages use the new versions (seen on the wire), all
// messages decrypt, and raising min_decryption_version makes the old ones fail with a
// typed ErrVersionTooOld.
func TestFieldRotationMidStream(t *testing.T) {
	const topic = "rotation"
	b := newKafka(t, topic)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	srv, err := devvault.Start(ctx, devvault.Options{Keys: []string{transitKey}})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Stop()
	if err := srv.CreateFieldKeys(ctx, detKey, fpeKey); err != nil {
		t.Fatal(err)
	}
	policy, _ := crypttopic.ParseFieldPolicy(mixedPolicy)
	top, err := crypttopic.Open(ctx, "kafka://"+topic, crypttopic.Options{
		Keyring: newVault(t, srv), Fields: policy,
		Reuse: keyring.ReusePolicy{MaxAge: 300 * time.Millisecond}, FPERefresh: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ps, bodies := purchases(3, 20)
	sendBatches(t, ctx, top, ps[:10], bodies[:10], 5)
	for _, k := range []string{transitKey, detKey, fpeKey} {
		if err := srv.RotateKey(ctx, k); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(400 * time.Millisecond) // past MaxAge and FPERefresh; the producer keeps running
	sendBatches(t, ctx, top, ps[10:], bodies[10:], 5)
	_ = top.Shutdown(ctx)

	raw := readRaw(t, b, topic, 20)
	for i, r := range raw {
		want := "1"
		if i >= 10 {
			want = "2"
		}
		var doc map[string]any
		_ = json.Unmarshal(r.Value, &doc)
		name, _ := doc["name"].(string)
		if got := versionRE.FindStringSubmatch(name); got == nil || got[1] != want {
			t.Fatalf("message %d: transit field %q, want key version %s", i, name, want)
		}
		if got := versionRE.FindStringSubmatch(header(r, "pubcrypt-dek")); got == nil || got[1] != want {
			t.Fatalf("message %d: data key version %v, want %s", i, got, want)
		}
		if !strings.Contains(header(r, "pubcrypt-fields"), fpeKey+"@"+want) {
			t.Fatalf("message %d: manifest %q does not name FPE key version %s", i, header(r, "pubcrypt-fields"), want)
		}
	}
	t.Logf("after rotation: transit fields, data keys and FPE keys moved from version 1 to 2 with no producer restart")

	consumeAll := func(group string) (ok, tooOld int) {
		sub, err := cryptsub.Open(ctx, "kafka://"+group+"?topic="+topic+"&offset=oldest", cryptsub.Options{Keyring: newVault(t, srv)})
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Shutdown(context.Background())
		for range 20 {
			m, err := sub.Receive(ctx)
			var de *cryptsub.DecryptError
			switch {
			case err == nil:
				ok++
				m.Ack()
			case errors.As(err, &de) && errors.Is(err, keyring.ErrVersionTooOld):
				tooOld++
				de.Message.Ack()
			default:
				t.Fatalf("receive: %v", err)
			}
		}
		return ok, tooOld
	}
	if ok, old := consumeAll("g-rot-1"); ok != 20 || old != 0 {
		t.Fatalf("mixed-version stream: %d decrypted, %d too old; want 20, 0", ok, old)
	}
	for _, k := range []string{transitKey, detKey, fpeKey} {
		if err := srv.SetMinDecryptionVersion(ctx, k, 2); err != nil {
			t.Fatal(err)
		}
	}
	if ok, old := consumeAll("g-rot-2"); ok != 10 || old != 10 {
		t.Fatalf("after min_decryption_version=2: %d decrypted, %d too old; want 10, 10", ok, old)
	}
}

// TestFieldTamperEveryByte changes, one at a time, every byte of the body and of the
// manifest of a field-protected message: each is a typed decryption error, never garbage.
func TestFieldTamperEveryByte(t *testing.T) {
	const src, topic = "fields_genuine", "fields_tampered"
	b := newKafka(t, src, topic)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	policy, _ := crypttopic.ParseFieldPolicy(mixedPolicy)
	top, err := crypttopic.Open(ctx, "kafka://"+src, crypttopic.Options{Keyring: newVault(t, vaultServer), Fields: policy})
	if err != nil {
		t.Fatal(err)
	}
	ps, bodies := purchases(9, 2)
	sendBatches(t, ctx, top, ps, bodies, 2)
	_ = top.Shutdown(ctx)
	orig := readRaw(t, b, src, 2)

	var records []*kgo.Record
	flip := func(r *kgo.Record, mutate func(*kgo.Record)) {
		c := &kgo.Record{Topic: topic, Value: bytes.Clone(r.Value)}
		for _, h := range r.Headers {
			c.Headers = append(c.Headers, kgo.RecordHeader{Key: h.Key, Value: bytes.Clone(h.Value)})
		}
		mutate(c)
		records = append(records, c)
	}
	for i := range orig[0].Value {
		flip(orig[0], func(c *kgo.Record) { c.Value[i] ^= 0x01 })
	}
	for hi, h := range orig[0].Headers {
		if h.Key != "pubcrypt-fields" {
			continue
		}
		for i := range h.Value {
			flip(orig[0], func(c *kgo.Record) { c.Headers[hi].Value[i] ^= 0x01 })
		}
	}
	// A protected value moved into another message: the other message's card number.
	var doc0, doc1 map[string]any
	_ = json.Unmarshal(orig[0].Value, &doc0)
	_ = json.Unmarshal(orig[1].Value, &doc1)
	flip(orig[0], func(c *kgo.Record) {
		c.Value = bytes.Replace(c.Value, []byte(doc0["name"].(string)), []byte(doc1["name"].(string)), 1)
	})
	produceRaw(t, b, records...)

	sub, err := cryptsub.Open(ctx, "kafka://g-ftamper?topic="+topic+"&offset=oldest", cryptsub.Options{Keyring: newVault(t, vaultServer)})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Shutdown(context.Background())
	for i := range records {
		m, err := sub.Receive(ctx)
		var de *cryptsub.DecryptError
		if !errors.As(err, &de) {
			t.Fatalf("variant %d of %d: got %v (message %v), want a DecryptError", i, len(records), err, m != nil)
		}
		if strings.Contains(err.Error(), ps[0].Name) || strings.Contains(err.Error(), ps[0].CardNumber) {
			t.Fatalf("variant %d: error leaks a protected value: %v", i, err)
		}
		de.Message.Ack()
	}
	t.Logf("%d tampered variants (every body and manifest byte, a value moved between messages) refused", len(records))
}

// Order is a type whose struct tags choose what is protected.
type Order struct {
	ID    string `json:"id"`
	Email string `json:"email" pubcrypt:"transit"`
	Card  string `json:"card" pubcrypt:"fpe,last4,luhn"`
	Total int    `json:"total" pubcrypt:"envelope"`
	Lines []struct {
		SKU string `json:"sku" pubcrypt:"deterministic"`
		Qty int    `json:"qty"`
	} `json:"lines"`
}

func TestStructTagsAndPerMessagePolicy(t *testing.T) {
	const topic = "tagged"
	b := newKafka(t, topic)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	top, err := crypttopic.Open(ctx, "kafka://"+topic, crypttopic.Options{Keyring: newVault(t, vaultServer)})
	if err != nil {
		t.Fatal(err)
	}
	o := Order{ID: "o-1", Email: "ana@example.com", Card: "4111 1111 1111 1111", Total: 4200}
	o.Lines = append(o.Lines, struct {
		SKU string `json:"sku" pubcrypt:"deterministic"`
		Qty int    `json:"qty"`
	}{"SKU-9", 2})
	if err := top.SendValue(ctx, o, nil); err != nil {
		t.Fatal(err)
	}
	tagged := []byte(`{"user":"ana","ssn":"123-45-6789","note":"hi"}`)
	if err := top.Send(ctx, &pubsub.Message{Body: tagged, Metadata: map[string]string{crypttopic.ProtectKey: "ssn=fpe,user=transit"}}); err != nil {
		t.Fatal(err)
	}
	_ = top.Shutdown(ctx)
	raw := readRaw(t, b, topic, 2)
	for _, secret := range []string{"ana@example.com", "4111 1111 1111 1111", "SKU-9", "123-45-6789", `"ana"`} {
		if bytes.Contains(raw[0].Value, []byte(secret)) || bytes.Contains(raw[1].Value, []byte(secret)) {
			t.Fatalf("raw topic holds %q", secret)
		}
	}
	if header(raw[1], crypttopic.ProtectKey) != "" {
		t.Fatal("the per-message policy entry was sent")
	}
	sub, err := cryptsub.Open(ctx, "kafka://g-tagged?topic="+topic+"&offset=oldest", cryptsub.Options{Keyring: newVault(t, vaultServer)})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Shutdown(context.Background())
	want, _ := json.Marshal(o)
	for _, w := range [][]byte{want, tagged} {
		m, err := sub.Receive(ctx)
		if err != nil {
			t.Fatal(err)
		}
		m.Ack()
		if !bytes.Equal(m.Body, w) {
			t.Fatalf("got %s, want %s", m.Body, w)
		}
	}
}
