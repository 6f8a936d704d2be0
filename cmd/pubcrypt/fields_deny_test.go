package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/pubcrypt/pubcrypt/internal/purchase"
)

// TestEncryptDenyByDefault runs `pubcrypt encrypt --fields` with a deny-by-default policy
// against a real Vault and Kafka: on the encrypted topic, read with a plain Kafka client,
// the kept fields are readable and no name, address, card number or amount of a purchase
// is, though the policy names none of them but the card. A policy the grammar refuses is
// a usage error naming the problem.
func TestEncryptDenyByDefault(t *testing.T) {
	const n = 10
	env := startVault(t)
	kafka := startKafka(t, topicPlain, topicEncrypted)
	cliEnv := append(env.env, "KAFKA_BROKERS="+kafka.Addrs[0])
	base := []string{"encrypt", "--sub", "kafka://enc?topic=" + topicPlain + "&offset=oldest", "--topic", "kafka://" + topicEncrypted}

	p := startCLI(t, cliEnv, append(base, "--fields", "keep=id", "--idle", "1s")...)
	if code, _ := p.wait(time.Minute); code != exitUsage || !strings.Contains(p.stderr.String(), "keep rules need a default") {
		t.Fatalf("keep without a default: exit %d, want %d:\n%s", code, exitUsage, p.stderr.String())
	}

	sent := producePlain(t, kafka.Addrs[0], topicPlain, 13, n)
	p = startCLI(t, cliEnv, append(base, "--fields", "default=envelope; keep=id,currency,items[].sku; **.card_number=fpe(bin,luhn)", "--max", "10")...)
	if code, _ := p.wait(time.Minute); code != exitOK {
		t.Fatalf("encrypt: exit %d\n%s", code, p.stderr.String())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rs, err := kafka.ReadRaw(ctx, topicEncrypted, n)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rs {
		var hdrs bytes.Buffer
		for _, h := range r.Headers {
			hdrs.WriteString(h.Key + "=" + string(h.Value) + "\n")
		}
		if !strings.Contains(hdrs.String(), "pubcrypt-fields=v2;") || !bytes.Contains(r.Value, []byte(`"id":"ord-`)) {
			t.Fatalf("record not field-protected under the deny-by-default policy:\n%s%s", hdrs.String(), r.Value)
		}
		for _, body := range sent {
			var pu purchase.Purchase
			if err := json.Unmarshal(body, &pu); err != nil {
				t.Fatal(err)
			}
			amount, _ := json.Marshal(pu.Amount)
			for _, secret := range []string{pu.Name, pu.Address, pu.CardNumber, `"amount":` + string(amount)} {
				if bytes.Contains(r.Value, []byte(secret)) || strings.Contains(hdrs.String(), secret) {
					t.Fatalf("%q is in clear on the encrypted topic:\n%s", secret, r.Value)
				}
			}
		}
	}
}
