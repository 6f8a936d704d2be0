package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"gocloud.dev/pubsub"

	"github.com/pubcrypt/pubcrypt/cryptsub"
	"github.com/pubcrypt/pubcrypt/crypttopic"
	"github.com/pubcrypt/pubcrypt/internal/broker"
	"github.com/pubcrypt/pubcrypt/internal/devkafka"
	"github.com/pubcrypt/pubcrypt/internal/devvault"
	"github.com/pubcrypt/pubcrypt/internal/purchase"
	"github.com/pubcrypt/pubcrypt/keyring"
)

const (
	demoTopic = "purchases_encrypted"
	demoKey   = "pubcrypt"
)

func runDemo(ctx context.Context, args []string, out io.Writer) error {
	fs := newFlags("demo", "Runs the story end to end on the embedded default: a real HashiCorp Vault dev server\n"+
		"started on 127.0.0.1 and a Kafka-protocol broker (kfake) inside this process. Purchases are\n"+
		"encrypted on send, shown as the broker's admin sees them, then received and decrypted.\n"+
		"The Vault binary is found via PUBCRYPT_VAULT_BIN, the project's cache or PATH\n"+
		"(scripts/install-vault.sh builds it once).")
	count := fs.Int("count", 5, "number of purchases to send")
	seed := fs.Uint64("seed", uint64(time.Now().UnixNano()), "seed for the generated purchases")
	vaultBin := fs.String("vault-bin", "", "path of the vault binary (default: found automatically)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *count < 1 {
		return errors.New("--count must be at least 1")
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	say := func(format string, a ...any) { fmt.Fprintf(out, format+"\n", a...) }

	say("== 1. Infrastructure")
	vault, err := devvault.Start(ctx, devvault.Options{Binary: *vaultBin, Keys: []string{demoKey}})
	if err != nil {
		return err
	}
	defer vault.Stop()
	say("   Vault dev server (real HashiCorp Vault) at %s, transit key %q created", vault.Addr, demoKey)
	kafka, err := devkafka.Start(devkafka.Options{Topics: []string{demoTopic}})
	if err != nil {
		return err
	}
	defer kafka.Close()
	if err := os.Setenv(broker.EnvKafkaBrokers, kafka.Addrs[0]); err != nil {
		return err
	}
	say("   Kafka broker (kfake, in process) at %s, topic %q", kafka.Addrs[0], demoTopic)

	client, err := vault.Client()
	if err != nil {
		return err
	}
	// Producer and consumer each have their own keyring, as two applications would.
	sendKeys, err := keyring.NewVault(keyring.VaultOptions{Client: client, Key: demoKey})
	if err != nil {
		return err
	}
	recvKeys, err := keyring.NewVault(keyring.VaultOptions{Client: client, Key: demoKey})
	if err != nil {
		return err
	}
	sub, err := cryptsub.Open(ctx, "kafka://demo-consumer?topic="+demoTopic+"&offset=oldest", cryptsub.Options{Keyring: recvKeys})
	if err != nil {
		return err
	}
	defer sub.Shutdown(context.Background())
	top, err := crypttopic.Open(ctx, "kafka://"+demoTopic, crypttopic.Options{Keyring: sendKeys})
	if err != nil {
		return err
	}
	defer top.Shutdown(context.Background())

	say("\n== 2. Producer: %d purchases, encrypted before they leave the process", *count)
	gen := purchase.NewGenerator(*seed)
	sent := make(map[string][]byte, *count)
	var secrets []string
	for range *count {
		p := gen.Next()
		body, err := json.Marshal(p)
		if err != nil {
			return err
		}
		if err := top.Send(ctx, &pubsub.Message{Body: body, Metadata: map[string]string{"order": p.ID}}); err != nil {
			return err
		}
		sent[p.ID] = body
		secrets = append(secrets, p.Name, p.CardNumber, strings.ReplaceAll(p.CardNumber, "-", ""))
		say("   sent %s  %-18s card %s  %8.2f %s", p.ID, p.Name, p.CardNumber, p.Amount, p.Currency)
	}

	say("\n== 3. What the broker's admin sees on %q (raw, no key)", demoTopic)
	raw, err := broker.OpenSubscription(ctx, "kafka://demo-admin?topic="+demoTopic+"&offset=oldest")
	if err != nil {
		return err
	}
	rawMsgs, err := peek(ctx, raw, *count, 10*time.Second)
	_ = raw.Shutdown(context.Background())
	if err != nil {
		return err
	}
	leaks := 0
	for i, m := range rawMsgs {
		printRaw(out, i+1, m)
		if containsAny(m, secrets) {
			leaks++
		}
	}
	say("   %d of %d raw messages contain a customer name or card number", leaks, len(rawMsgs))

	say("\n== 4. Consumer: receive and decrypt")
	for range *count {
		m, err := sub.Receive(ctx)
		if err != nil {
			return err
		}
		m.Ack()
		want, ok := sent[m.Metadata["order"]]
		if !ok || !bytes.Equal(want, m.Body) {
			return fmt.Errorf("message %s did not decrypt to what was sent", m.LoggableID)
		}
		say("   %s", shorten(string(m.Body), 150))
	}

	say("\n== 5. Tampering: one byte of a ciphertext changed on the broker")
	tampered := rawMsgs[0]
	body := bytes.Clone(tampered.Body)
	body[len(body)/2] ^= 0x01
	if err := top.Unwrap().Send(ctx, &pubsub.Message{Body: body, Metadata: tampered.Metadata}); err != nil {
		return err
	}
	_, err = sub.Receive(ctx)
	var de *cryptsub.DecryptError
	if !errors.As(err, &de) || !errors.Is(err, cryptsub.ErrTampered) {
		return fmt.Errorf("tampered message was not refused: %v", err)
	}
	de.Message.Ack()
	say("   refused: %v", err)

	say("\n== Summary")
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "   purchases sent\t%d\n", *count)
	fmt.Fprintf(tw, "   raw messages holding plaintext\t%d\n", leaks)
	fmt.Fprintf(tw, "   decrypted byte-equal\t%d\n", len(sent))
	fmt.Fprintf(tw, "   Vault calls, producer\t%d\n", sendKeys.Calls())
	fmt.Fprintf(tw, "   Vault calls, consumer\t%d\n", recvKeys.Calls())
	fmt.Fprintf(tw, "   tampered message\trefused (%s)\n", "ErrTampered")
	tw.Flush()
	if leaks > 0 {
		return fmt.Errorf("%d raw messages hold plaintext", leaks)
	}
	return nil
}

func containsAny(m *pubsub.Message, secrets []string) bool {
	for _, s := range secrets {
		if bytes.Contains(m.Body, []byte(s)) {
			return true
		}
		for _, v := range m.Metadata {
			if strings.Contains(v, s) {
				return true
			}
		}
	}
	return false
}
