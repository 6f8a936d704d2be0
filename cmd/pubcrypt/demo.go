package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
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
	topicPlain     = "purchases"
	topicEncrypted = "purchases_encrypted"
	topicLarge     = "purchases_large_encrypted"
	demoKey        = keyring.DefaultKey
	demoDetKey     = keyring.DefaultDeterministicKey
	demoFPEKey     = keyring.DefaultFPEKey
)

// demo holds what the steps of the story share.
type demo struct {
	out     io.Writer
	vault   *devvault.Server
	kafka   *devkafka.Broker
	secrets []string          // names, addresses and card numbers sent, to look for on the wire
	sent    map[string][]byte // order ID → plaintext body
	rows    [][2]string       // summary table
}

func (d *demo) say(format string, a ...any) { fmt.Fprintf(d.out, format+"\n", a...) }
func (d *demo) step(n int, title string)    { d.say("\n== %d. %s", n, title) }
func (d *demo) row(k, v string)             { d.rows = append(d.rows, [2]string{k, v}) }

func runDemo(ctx context.Context, args []string, out io.Writer) error {
	fs := newFlags("demo", "Replays the whole story on the embedded default: a real HashiCorp Vault dev server on\n"+
		"127.0.0.1 and a Kafka-protocol broker (kfake) inside this process.\n\n"+
		"  1. infrastructure    2. a producer writes plaintext purchases to \""+topicPlain+"\"\n"+
		"  3. what an admin sees    4. the encryptor bridges them to \""+topicEncrypted+"\" with\n"+
		"     per-field Vault encryption and format-preserving card numbers    5. what an admin sees now\n"+
		"  6. an operator rotates the Vault keys; new purchases use the new version, no restart\n"+
		"  7. a consumer decrypts messages of both versions    8. a tampered message is refused\n"+
		"  9. files from source/ travel encrypted through \""+topicLarge+"\" into destination/\n\n"+
		"The Vault binary is found via PUBCRYPT_VAULT_BIN, the project's cache or PATH\n"+
		"(scripts/install-vault.sh builds it once).")
	count := countFlag(fs, new(int), "count", 5, "purchases per round (two rounds: before and after rotation)")
	seed := fs.Uint64("seed", uint64(time.Now().UnixNano()), "seed for the generated purchases")
	vaultBin := fs.String("vault-bin", "", "path of the vault binary (default: found automatically)")
	policy := fs.String("fields", defaultFieldPolicy, "field policy of the encryptor")
	workdir := fs.String("workdir", "", "directory for source/ and destination/ of the file transfer (default: a temporary one, removed)")
	fileMiB := countFlag(fs, new(int), "file-mib", 3, "size in MiB of the large generated file sent in step 9")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *count < 1 {
		return usagef("--count must be at least 1 (the demo runs two rounds of it)")
	}
	fieldPolicy, err := crypttopic.ParseFieldPolicy(*policy)
	if err != nil {
		return fmt.Errorf("--fields: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	d := &demo{out: out, sent: map[string][]byte{}}

	d.step(1, "Infrastructure")
	d.vault, err = devvault.Start(ctx, devvault.Options{Binary: *vaultBin, Keys: []string{demoKey}})
	if err != nil {
		return err
	}
	defer d.vault.Stop()
	if err := d.vault.CreateFieldKeys(ctx, demoDetKey, demoFPEKey); err != nil {
		return err
	}
	for _, kv := range d.vault.Env() {
		k, v, _ := strings.Cut(kv, "=")
		if err := os.Setenv(k, v); err != nil {
			return err
		}
	}
	d.say("   Vault dev server (real HashiCorp Vault) at %s; transit keys %q (data keys, transit fields),", d.vault.Addr, demoKey)
	d.say("   %q (deterministic, derived+convergent), %q (format-preserving keys)", demoDetKey, demoFPEKey)
	d.kafka, err = devkafka.Start(devkafka.Options{Topics: []string{topicPlain, topicEncrypted, topicLarge}})
	if err != nil {
		return err
	}
	defer d.kafka.Close()
	if err := os.Setenv(broker.EnvKafkaBrokers, d.kafka.Addrs[0]); err != nil {
		return err
	}
	d.say("   Kafka broker (kfake, in process) at %s; topics %s, %s, %s", d.kafka.Addrs[0], topicPlain, topicEncrypted, topicLarge)

	// Every application has its own keyring, so the summary can count Vault calls per role.
	newKeys := func() (*keyring.Vault, error) { return keyring.NewVault(keyring.VaultOptions{Key: demoKey}) }
	encKeys, err := newKeys()
	if err != nil {
		return err
	}
	consKeys, err := newKeys()
	if err != nil {
		return err
	}

	plain, err := broker.OpenTopic(ctx, "kgo://"+topicPlain)
	if err != nil {
		return err
	}
	defer shutdown(plain)
	gen := purchase.NewGenerator(*seed)

	d.step(2, fmt.Sprintf("Producer: %d purchases, in plaintext, to %q", *count, topicPlain))
	if err := d.produce(ctx, plain, gen, *count); err != nil {
		return err
	}

	d.step(3, fmt.Sprintf("What the broker's admin sees on %q", topicPlain))
	leaks, err := d.peek(ctx, topicPlain, *count)
	if err != nil {
		return err
	}
	d.say("   %d of %d messages expose a customer name, address or card number", leaks, *count)
	d.row("plaintext topic: messages exposing customer data", fmt.Sprintf("%d of %d", leaks, *count))

	d.step(4, fmt.Sprintf("Encryptor: %s → %s, fields %s", topicPlain, topicEncrypted, fieldPolicy))
	// The demo renews data keys and looks up the FPE key version every second so that the
	// rotation shows at once; the defaults are five minutes and one minute.
	enc, err := crypttopic.Open(ctx, "kgo://"+topicEncrypted, crypttopic.Options{
		Keyring: encKeys, Fields: fieldPolicy, FPERefresh: time.Second, Reuse: keyring.ReusePolicy{MaxAge: time.Second},
		FieldKeys: crypttopic.FieldKeys{Deterministic: demoDetKey, FPE: demoFPEKey}})
	if err != nil {
		return err
	}
	defer shutdown(enc)
	src, err := broker.OpenSubscription(ctx, "kgo://pubcrypt-encryptor?topic="+topicPlain+"&offset=oldest")
	if err != nil {
		return err
	}
	defer shutdown(src)
	encrypted := make(chan string, 4**count)
	bridgeErr := make(chan error, 1)
	bctx, stopBridge := context.WithCancel(ctx)
	defer stopBridge()
	go func() { // runs for the rest of the story, across the rotation
		b := &bridger{src: src, dst: enc, batch: 100, onFault: onFaultStop,
			each: func(m *pubsub.Message) { encrypted <- m.Metadata["order"] }}
		_, err := b.run(bctx)
		bridgeErr <- err
	}()
	if err := d.await(ctx, encrypted, bridgeErr, *count); err != nil {
		return err
	}
	d.say("   %d purchases encrypted and forwarded; each source message acknowledged after its copy was accepted", *count)

	d.step(5, fmt.Sprintf("What the broker's admin sees on %q", topicEncrypted))
	leaks, err = d.peek(ctx, topicEncrypted, *count)
	if err != nil {
		return err
	}
	d.say("   %d of %d messages expose a customer name, address or card number; card numbers keep", leaks, *count)
	d.say("   their shape, first 6 digits and a valid check digit, so validation and joins still work")

	d.step(6, "Operator rotates the Vault keys; the encryptor keeps running")
	if err := rotateKeys(ctx, encKeys, []string{demoKey, demoFPEKey}, d.out); err != nil {
		return err
	}
	time.Sleep(1100 * time.Millisecond) // let the encryptor's data-key age and FPE refresh pass
	d.say("   producer sends %d more purchases", *count)
	if err := d.produce(ctx, plain, gen, *count); err != nil {
		return err
	}
	if err := d.await(ctx, encrypted, bridgeErr, *count); err != nil {
		return err
	}
	stopBridge()
	if err := <-bridgeErr; err != nil {
		return err
	}
	raw, err := d.rawMessages(ctx, topicEncrypted, 2**count)
	if err != nil {
		return err
	}
	before, after := wireVersions(raw[0]), wireVersions(raw[len(raw)-1])
	d.say("   on the wire before the rotation: %s", before)
	d.say("   on the wire after the rotation:  %s", after)
	d.row("encrypted topic: messages exposing customer data", fmt.Sprintf("%d of %d", d.countLeaks(raw), len(raw)))
	d.row("key versions on the wire", "v1 before the rotation, v2 after, encryptor not restarted")

	d.step(7, fmt.Sprintf("Consumer: decrypt every message of %q, both key versions", topicEncrypted))
	sub, err := cryptsub.Open(ctx, "kgo://pubcrypt-consumer?topic="+topicEncrypted+"&offset=oldest", cryptsub.Options{Keyring: consKeys})
	if err != nil {
		return err
	}
	defer shutdown(sub)
	// In batches, as `pubcrypt consume` reads: the protected fields of a batch cost one
	// Vault call per key version, not one per message.
	for got := 0; got < 2**count; {
		msgs, _, errs := sub.ReceiveBatch(ctx, 2**count-got)
		for i, m := range msgs {
			if errs[i] != nil {
				return errs[i]
			}
			m.Ack()
			got++
			want, ok := d.sent[m.Metadata["order"]]
			if !ok || !bytes.Equal(want, m.Body) {
				return fmt.Errorf("message %s did not decrypt to what the producer sent", broker.Position(m))
			}
			d.say("   [%s] %s", shortVersions(raw[indexOf(raw, m.Metadata["order"])]), shorten(string(m.Body), 110))
		}
	}
	d.row("decrypted byte-equal to what was produced", fmt.Sprintf("%d of %d", 2**count, 2**count))

	d.step(8, "Tampering: one byte of a protected message changed on the broker")
	tampered := raw[0]
	body := bytes.Clone(tampered.Body)
	body[len(body)/2] ^= 0x01
	if err := enc.Unwrap().Send(ctx, &pubsub.Message{Body: body, Metadata: tampered.Metadata}); err != nil {
		return err
	}
	_, err = sub.Receive(ctx)
	var de *cryptsub.DecryptError
	if !errors.As(err, &de) || !errors.Is(err, cryptsub.ErrTampered) {
		return fmt.Errorf("tampered message was not refused: %v", err)
	}
	de.Message.Ack()
	d.say("   refused: %v", err)
	d.row("tampered message", "refused (cryptsub.ErrTampered)")

	d.step(9, fmt.Sprintf("Files: source/ → %q → destination/, one-use data key per file", topicLarge))
	if err := d.files(ctx, *workdir, *fileMiB, *seed); err != nil {
		return err
	}

	d.say("\n== Summary")
	d.row("Vault calls, encryptor", fmt.Sprint(encKeys.Calls()))
	d.row("Vault calls, consumer", fmt.Sprint(consKeys.Calls()))
	tw := tabwriter.NewWriter(d.out, 0, 0, 2, ' ', 0)
	for _, r := range d.rows {
		fmt.Fprintf(tw, "   %s\t%s\n", r[0], r[1])
	}
	tw.Flush()
	if n := d.countLeaks(raw); n > 0 {
		return fmt.Errorf("%d encrypted messages expose customer data", n)
	}
	return nil
}

// files sends generated files through the large topic and checks they arrive intact.
func (d *demo) files(ctx context.Context, workdir string, mib int, seed uint64) error {
	if workdir == "" {
		tmp, err := os.MkdirTemp("", "pubcrypt-demo-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		workdir = tmp
	}
	src, dst := filepath.Join(workdir, "source"), filepath.Join(workdir, "destination")
	if err := os.MkdirAll(src, 0o755); err != nil {
		return err
	}
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	// A purchase ledger as CSV, padded to the requested size, and a small note.
	var ledger bytes.Buffer
	ledger.WriteString("id,name,card_number,amount\n")
	gen := purchase.NewGenerator(seed + 1)
	for ledger.Len() < mib<<20 {
		p := gen.Next()
		fmt.Fprintf(&ledger, "%s,%s,%s,%.2f\n", p.ID, p.Name, p.CardNumber, p.Amount)
	}
	names := map[string][]byte{"ledger-2026-11.csv": ledger.Bytes(), "board minutes (confidential).txt": []byte("Q4: acquire the competitor.\n")}
	for name, data := range names {
		if err := os.WriteFile(filepath.Join(src, name), data, 0o644); err != nil {
			return err
		}
	}
	files, err := regularFiles(src)
	if err != nil {
		return err
	}
	kr, err := keyring.NewVault(keyring.VaultOptions{Key: demoKey})
	if err != nil {
		return err
	}
	top, err := broker.OpenTopic(ctx, "kgo://"+topicLarge)
	if err != nil {
		return err
	}
	sent, err := sendFiles(ctx, kr, top, files, defaultChunkSize, io.Discard)
	_ = shutdown(top)
	if err != nil {
		return err
	}
	total := 0
	for _, s := range sent {
		total += int(s.Messages)
		d.say("   sent %-34s %9d bytes in %3d messages", s.name, s.Size, s.Messages)
	}
	raw, err := d.rawMessages(ctx, topicLarge, total)
	if err != nil {
		return err
	}
	d.say("   what the admin sees of the first message (the file name travels encrypted):")
	printRaw(d.out, 1, raw[0])
	exposed := 0
	for _, m := range raw {
		for name := range names {
			if bytes.Contains(m.Body, []byte(name)) || strings.Contains(fmt.Sprint(m.Metadata), name) {
				exposed++
			}
		}
	}
	sub, err := broker.OpenSubscription(ctx, "kgo://pubcrypt-files?topic="+topicLarge+"&offset=oldest")
	if err != nil {
		return err
	}
	defer shutdown(sub)
	var log bytes.Buffer
	got, failed, err := receiveFiles(ctx, kr, sub, dst, receiveLimits{files: len(files)}, &log, io.Discard)
	if err != nil {
		return err
	}
	for name, data := range names {
		back, err := os.ReadFile(filepath.Join(dst, name))
		if err != nil || !bytes.Equal(back, data) {
			return fmt.Errorf("file %q did not arrive intact in destination/", name)
		}
	}
	d.say("   received %d file(s) into destination/, %d refused; each byte-identical to its source", got, failed)
	d.row("files through "+topicLarge, fmt.Sprintf("%d of %d byte-identical, names visible on the topic: %d", got, len(files), exposed))
	return nil
}

// produce sends count plaintext purchases, as the application before pubcrypt does.
func (d *demo) produce(ctx context.Context, top *pubsub.Topic, gen *purchase.Generator, count int) error {
	_, err := producePurchases(ctx, top, gen, count, 0, func(p purchase.Purchase) {
		body, _ := json.Marshal(p)
		d.sent[p.ID] = body
		d.secrets = append(d.secrets, p.Name, p.Address, p.CardNumber, strings.ReplaceAll(p.CardNumber, "-", ""))
		d.say("   sent %s  %-18s card %s  %8.2f %s", p.ID, p.Name, p.CardNumber, p.Amount, p.Currency)
	})
	return err
}

// await waits until the bridge has forwarded n more messages.
func (d *demo) await(ctx context.Context, done <-chan string, bridgeErr <-chan error, n int) error {
	for range n {
		select {
		case <-done:
		case err := <-bridgeErr:
			return fmt.Errorf("encryptor stopped: %v", err)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

var peekGroup int

// rawMessages reads the first n messages of topic without decrypting, in a group of its own.
func (d *demo) rawMessages(ctx context.Context, topic string, n int) ([]*pubsub.Message, error) {
	peekGroup++
	sub, err := broker.OpenSubscription(ctx, fmt.Sprintf("kgo://pubcrypt-admin-%d?topic=%s&offset=oldest", peekGroup, topic))
	if err != nil {
		return nil, err
	}
	defer shutdown(sub)
	msgs, err := peek(ctx, sub, n, 10*time.Second)
	if err == nil && len(msgs) < n {
		err = fmt.Errorf("read %d of %d messages from %s", len(msgs), n, topic)
	}
	return msgs, err
}

// peek prints the first n raw messages of topic and returns how many expose a secret.
func (d *demo) peek(ctx context.Context, topic string, n int) (int, error) {
	msgs, err := d.rawMessages(ctx, topic, n)
	if err != nil {
		return 0, err
	}
	for i, m := range msgs[:min(len(msgs), 2)] {
		printRaw(d.out, i+1, m)
	}
	if len(msgs) > 2 {
		d.say("   … %d more", len(msgs)-2)
	}
	return d.countLeaks(msgs), nil
}

func (d *demo) countLeaks(msgs []*pubsub.Message) int {
	n := 0
	for _, m := range msgs {
		if containsAny(m, d.secrets) {
			n++
		}
	}
	return n
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

var (
	nameField  = regexp.MustCompile(`"name":"([^"]*)"`)
	fpeVersion = regexp.MustCompile(`;fk=[^;@]+@(\d+)`)
)

// ciphertextVersion is "vN" for a key service's ciphertext of key version N, "-" for
// anything else.
func ciphertextVersion(s string) string {
	if n, ok := keyring.CiphertextVersion(s); ok {
		return "v" + strconv.Itoa(n)
	}
	return "-"
}

// versions are the key versions that protect a raw message: the transit key of the name
// field, the key that wrapped the data key, and the FPE key of the card number.
func versions(m *pubsub.Message) (transit, dek, fpe string) {
	transit, fpe = "-", "-"
	if g := nameField.FindStringSubmatch(string(m.Body)); g != nil {
		transit = ciphertextVersion(g[1])
	}
	if g := fpeVersion.FindStringSubmatch(m.Metadata["pubcrypt-fields"]); g != nil {
		fpe = "v" + g[1]
	}
	return transit, ciphertextVersion(m.Metadata["pubcrypt-dek"]), fpe
}

// wireVersions says which key versions protect a raw message.
func wireVersions(m *pubsub.Message) string {
	transit, dek, fpe := versions(m)
	return fmt.Sprintf("transit field %s, data key %s, FPE key %s", transit, dek, fpe)
}

func shortVersions(m *pubsub.Message) string {
	transit, dek, fpe := versions(m)
	return fmt.Sprintf("keys %s/%s/%s", transit, dek, fpe)
}

func indexOf(msgs []*pubsub.Message, order string) int {
	for i, m := range msgs {
		if m.Metadata["order"] == order {
			return i
		}
	}
	return 0
}
