package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"gocloud.dev/pubsub"

	"github.com/pubcrypt/pubcrypt/cryptsub"
	"github.com/pubcrypt/pubcrypt/crypttopic"
	"github.com/pubcrypt/pubcrypt/fault"
	"github.com/pubcrypt/pubcrypt/keyring"
)

// shredPolicy protects a purchase under the key of its customer: the name by Vault
// (transit), the address locally (envelope), the card number format-preserving (fpe),
// and everything else a deny-by-default policy would leave readable stays so.
const shredPolicy = "subject=customer_id; name=envelope,address=envelope,card_number=fpe(bin,luhn)"

// TestCryptoShredding is issue 13's crypto-shredding, end to end on the real Vault and
// Kafka broker, with the tokens of terraform/vault's policies: 10,000 purchases of 100
// customers go to Kafka, each customer's values under a key of that customer alone; the
// forget token forgets one customer; a consumer then reads every record: the forgotten
// customer's 100 fail with cryptsub.ErrShredded (a message fault: acknowledged, not an
// outage), the other 9,900 decrypt byte for byte. A producer that still caches the
// customer's data key sends 10 more after Forget: those fail with ErrShredded too. The
// producer and consumer tokens may not forget anyone; the forget token decrypts nothing.
// The subject ID is nowhere on the wire and in no Vault key name.
func TestCryptoShredding(t *testing.T) {
	const (
		customers = 100
		perBatch  = 1000
		total     = 10000
		stale     = 10
		topic     = "shred"
	)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	b := newKafka(t, topic)
	policy, err := crypttopic.ParseFieldPolicy(shredPolicy)
	if err != nil {
		t.Fatal(err)
	}
	customer := func(i int) string { return fmt.Sprintf("cust-%04d-%s", i%customers, t.Name()) }
	forgotten := customer(42)

	ps, _ := purchases(13, total+stale+1)
	bodies := make([][]byte, len(ps))
	for i, p := range ps {
		var m map[string]any
		raw, _ := json.Marshal(p)
		_ = json.Unmarshal(raw, &m)
		m["customer_id"] = customer(i)
		if i >= total {
			m["customer_id"] = forgotten
		}
		bodies[i], _ = json.Marshal(m)
	}
	msg := func(i int) *pubsub.Message {
		return &pubsub.Message{Body: bodies[i], Metadata: map[string]string{"order": ps[i].ID}}
	}

	producerVault := vaultWith(t, producerToken)
	prod, err := crypttopic.Open(ctx, "kafka://"+topic, crypttopic.Options{Keyring: producerVault, Fields: policy, FieldKeys: fieldKeys()})
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Shutdown(context.Background())
	for start := 0; start < total; start += perBatch {
		batch := make([]*pubsub.Message, perBatch)
		for i := range batch {
			batch[i] = msg(start + i)
		}
		if err := prod.SendBatch(ctx, batch); err != nil {
			t.Fatal(err)
		}
	}
	sendCalls := producerVault.Calls()

	// A second producer, which has sent one message of the customer (and so holds the
	// customer's data key) before the customer is forgotten.
	staleVault := vaultWith(t, producerToken)
	staleProd, err := crypttopic.Open(ctx, "kafka://"+topic, crypttopic.Options{Keyring: staleVault, Fields: policy, FieldKeys: fieldKeys()})
	if err != nil {
		t.Fatal(err)
	}
	defer staleProd.Shutdown(context.Background())
	if err := staleProd.Send(ctx, msg(total)); err != nil {
		t.Fatal(err)
	}

	// Neither the producer nor the consumer may forget; the forget token may.
	for who, tok := range map[string]string{"producer": producerToken, "consumer": consumerToken} {
		s, err := keyring.NewSubjects(vaultWith(t, tok), keyring.SubjectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Forget(ctx, forgotten); !errors.Is(err, keyring.ErrPermissionDenied) {
			t.Errorf("Forget with the %s token: %v, want ErrPermissionDenied", who, err)
		}
	}
	forgetVault := vaultWith(t, forgetToken)
	subjects, err := keyring.NewSubjects(forgetVault, keyring.SubjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	f, err := subjects.Forget(ctx, forgotten)
	if err != nil {
		t.Fatal(err)
	}
	if f.Destroyed != 1 || !keyring.IsSubjectKey(f.Key) {
		t.Fatalf("Forget = %+v, want one version destroyed", f)
	}
	t.Logf("forgot %s: key %s, %d version destroyed, now at version %d", "customer 42", f.Key, f.Destroyed, f.Latest)
	// The producer token may create a subject key and no more: it may not raise a
	// key's minimum versions or trim it (the only parameter it may send is the key
	// type), so it cannot forget by hand either.
	root, err := vaultServer.Client()
	if err != nil {
		t.Fatal(err)
	}
	root.SetToken(producerToken)
	for path, body := range map[string]map[string]any{
		"keys/" + f.Key + "/config": {"min_decryption_version": 1},
		"keys/" + f.Key + "/trim":   {"min_available_version": 1},
		"keys/" + f.Key:             {"type": "aes256-gcm96", "exportable": true},
	} {
		if _, err := root.Logical().WriteWithContext(ctx, names.Mount+"/"+path, body); err == nil || !strings.Contains(err.Error(), "permission denied") {
			t.Errorf("the producer token wrote %s: %v", path, err)
		}
	}
	// The forget token reads no message: it may not unwrap a data key.
	if _, err := forgetVault.UnwrapDataKey(ctx, f.Key, "vault:v2:AAAA"); !errors.Is(err, keyring.ErrPermissionDenied) {
		t.Errorf("unwrap with the forget token: %v, want ErrPermissionDenied", err)
	}

	// The stale producer goes on sending the forgotten customer under its cached data key.
	for i := total + 1; i <= total+stale; i++ {
		if err := staleProd.Send(ctx, msg(i)); err != nil {
			t.Fatal(err)
		}
	}

	// Nothing on the wire names a customer.
	raw := readRaw(t, b, topic, total+stale+1)
	for _, r := range raw {
		if bytes.Contains(r.Value, []byte("cust-")) {
			t.Fatalf("a record shows a customer ID: %.120s", r.Value)
		}
		for _, h := range r.Headers {
			if bytes.Contains(h.Value, []byte("cust-")) {
				t.Fatalf("header %s shows a customer ID", h.Key)
			}
		}
	}

	consumerVault := vaultWith(t, consumerToken)
	sub, err := cryptsub.Open(ctx, "kafka://shred-reader?topic="+topic+"&offset=oldest", cryptsub.Options{Keyring: consumerVault})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Shutdown(context.Background())
	byOrder := map[string]int{}
	for i, p := range ps {
		byOrder[p.ID] = i
	}
	var ok, shredded, other int
	seen := 0
	for seen < total+stale+1 {
		msgs, _, errs := sub.ReceiveBatch(ctx, 1000)
		for i, m := range msgs {
			if m == nil {
				t.Fatalf("receive: %v", errs[i])
			}
			seen++
			m.Ack()
			idx := byOrder[m.Metadata["order"]]
			switch err := errs[i]; {
			case err == nil:
				ok++
				if !bytes.Equal(m.Body, bodies[idx]) {
					t.Fatalf("message %d decrypted to other bytes", idx)
				}
				if idx >= total {
					t.Errorf("message %d of the forgotten customer decrypted", idx)
				}
			case errors.Is(err, cryptsub.ErrShredded):
				shredded++
				if fault.ClassOf(err) != fault.Message {
					t.Errorf("ErrShredded of class %v", fault.ClassOf(err))
				}
				if idx < total && idx%customers != 42 {
					t.Errorf("message %d of another customer: %v", idx, err)
				}
				if strings.Contains(err.Error(), "cust-") {
					t.Errorf("the error names the customer: %v", err)
				}
			default:
				other++
				t.Errorf("message %d: %v", idx, err)
			}
		}
	}
	receiveCalls := consumerVault.Calls()
	want := total/customers + stale + 1
	if ok != total-total/customers || shredded != want || other != 0 {
		t.Fatalf("decrypted %d, shredded %d, other errors %d; want %d, %d, 0", ok, shredded, other, total-total/customers, want)
	}
	perSend := float64(sendCalls) / total
	perReceive := float64(receiveCalls) / float64(total+stale+1)
	t.Logf("%d messages of %d customers: %d decrypted, %d ErrShredded (customer 42's %d, and %d sent after Forget by a producer holding its data key)", total+stale+1, customers, ok, shredded, total/customers, stale+1)
	t.Logf("Vault calls: producer %d (%.4f per message), consumer %d (%.4f per message)", sendCalls, perSend, receiveCalls, perReceive)
	// Per customer and process: one create, one data key, one FPE key, and a transit
	// batch per batch of messages; one HMAC call names a batch's new customers.
	if perSend > 0.15 || perReceive > 0.15 {
		t.Errorf("Vault calls per message: %.4f sending, %.4f receiving; want at most 0.15", perSend, perReceive)
	}
}
