package e2e

import (
	"bytes"
	"context"
	"errors"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pubcrypt/pubcrypt/cryptsub"
	"github.com/pubcrypt/pubcrypt/crypttopic"
)

// kcatRecord starts every record in kcat's output: a line no ciphertext will produce by
// chance, so that records are counted even when a body holds newlines.
const kcatRecord = "=== pubcrypt-e2e record offset="

var kcatRecordRE = regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(kcatRecord) + `(\d+) ===$`)

// kcat reads every record of topic with Debian's kcat, as an admin of the broker would:
// headers and value of each record, no decryption. It returns kcat's standard output.
func kcat(t *testing.T, broker, topic string) []byte {
	t.Helper()
	bin, err := exec.LookPath("kcat")
	if err != nil {
		t.Fatalf("kcat is not installed; this test reads the topics with it as an outside client: run scripts/install-test-tools.sh (%v)", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-b", broker, "-C", "-t", topic, "-o", "beginning", "-e", "-q",
		"-f", kcatRecord+`%o ===\n%h\n%s\n`)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			err = errors.Join(err, ctx.Err())
		}
		t.Fatalf("kcat on topic %s: %v\nstderr: %s", topic, err, stderr.Bytes())
	}
	return stdout.Bytes()
}

// TestOutsideClientSeesNoPlaintext sends generated purchases through crypttopic, whole
// body encrypted on one topic and chosen fields protected on another, then reads both
// topics with kcat: every record carries the envelope headers, and no name, address or
// card number that was sent appears anywhere in what kcat prints (headers or values).
func TestOutsideClientSeesNoPlaintext(t *testing.T) {
	const (
		bodyTopic   = "purchases_encrypted"
		fieldsTopic = "purchases_fields"
		n           = 50
		fieldPolicy = "name=transit,address=envelope,card_number=fpe(bin,luhn)"
	)
	if _, err := exec.LookPath("kcat"); err != nil {
		t.Fatalf("kcat is not installed; this test reads the topics with it as an outside client: run scripts/install-test-tools.sh (%v)", err)
	}
	b := newKafka(t, bodyTopic, fieldsTopic)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	policy, err := crypttopic.ParseFieldPolicy(fieldPolicy)
	if err != nil {
		t.Fatal(err)
	}

	ps, bodies := purchases(2026, 2*n)
	for _, tc := range []struct {
		topic  string
		fields crypttopic.FieldPolicy
		from   int
	}{{bodyTopic, nil, 0}, {fieldsTopic, policy, n}} {
		top, err := crypttopic.Open(ctx, "kafka://"+tc.topic, crypttopic.Options{
			Keyring: vaultWith(t, producerToken), Fields: tc.fields, FieldKeys: fieldKeys()})
		if err != nil {
			t.Fatal(err)
		}
		if err := top.SendBatch(ctx, messages(ps[tc.from:tc.from+n], bodies[tc.from:tc.from+n])); err != nil {
			t.Fatalf("send to %s: %v", tc.topic, err)
		}
		if err := top.Shutdown(ctx); err != nil {
			t.Fatal(err)
		}
	}

	// Every purchase sent to either topic, checked against both topics.
	var secrets [][]byte
	for _, p := range ps {
		secrets = append(secrets, []byte(p.Name), []byte(p.Address), []byte(p.CardNumber),
			[]byte(strings.ReplaceAll(p.CardNumber, "-", "")))
	}
	deks := regexp.MustCompile(`pubcrypt-dek=vault:v1:`)
	for _, tc := range []struct {
		topic   string
		headers []string
		// clear is what field mode leaves readable, so it must show in kcat's output: the
		// proof that kcat prints the values and the absence of the secrets means something.
		clear []string
	}{
		{bodyTopic, []string{"pubcrypt=v1;", "pubcrypt-dek=vault:v1:", "order=ord-"}, nil},
		{fieldsTopic, []string{"pubcrypt=v1;", "pubcrypt-dek=vault:v1:", "pubcrypt-fields=v1;", "order=ord-"},
			[]string{`"id":"ord-`, `"currency":"EUR"`, `"name":"vault:v1:`}},
	} {
		out := kcat(t, b.Addrs[0], tc.topic)
		offsets := kcatRecordRE.FindAllSubmatch(out, -1)
		if len(offsets) != n {
			t.Fatalf("%s: kcat printed %d records, want %d", tc.topic, len(offsets), n)
		}
		for i, o := range offsets {
			if got, _ := strconv.Atoi(string(o[1])); got != i {
				t.Fatalf("%s: record %d has offset %d", tc.topic, i, got)
			}
		}
		// Every record, not just one: split kcat's output at the record lines.
		records := kcatRecordRE.Split(string(out), -1)[1:]
		for i, rec := range records {
			for _, h := range tc.headers {
				if !strings.Contains(rec, h) {
					t.Fatalf("%s: record %d as kcat shows it has no %q header:\n%.300s", tc.topic, i, h, rec)
				}
			}
		}
		if got := len(deks.FindAll(out, -1)); got != n {
			t.Fatalf("%s: %d wrapped data keys in kcat's output, want %d", tc.topic, got, n)
		}
		for _, s := range secrets {
			if bytes.Contains(out, s) {
				t.Fatalf("%s: kcat's output holds the plaintext %q", tc.topic, s)
			}
		}
		for _, c := range tc.clear {
			if got := bytes.Count(out, []byte(c)); got != n {
				t.Fatalf("%s: %q (left in clear by the field policy) appears %d times in kcat's output, want %d", tc.topic, c, got, n)
			}
		}
		if tc.clear == nil && bytes.Contains(out, []byte(`"currency"`)) {
			t.Fatalf("%s: body mode, yet kcat's output holds a JSON key of the body", tc.topic)
		}
		first := records[0]
		if len(first) > 400 {
			first = first[:400] + "..."
		}
		t.Logf("%s: %d records, %d bytes of kcat output, no name, address or card number; first record:\n%q", tc.topic, n, len(out), first)
	}

	// What kcat saw is what the consumer decrypts: the consumer gets every purchase back.
	for _, tc := range []struct {
		topic string
		from  int
	}{{bodyTopic, 0}, {fieldsTopic, n}} {
		sub, err := cryptsub.Open(ctx, "kafka://e2e-kcat?topic="+tc.topic+"&offset=oldest", cryptsub.Options{Keyring: vaultWith(t, consumerToken)})
		if err != nil {
			t.Fatal(err)
		}
		want := map[string][]byte{}
		for i := tc.from; i < tc.from+n; i++ {
			want[ps[i].ID] = bodies[i]
		}
		for range n {
			m, err := sub.Receive(ctx)
			if err != nil {
				t.Fatalf("%s: receive: %v", tc.topic, err)
			}
			m.Ack()
			if id := m.Metadata["order"]; !bytes.Equal(m.Body, want[id]) {
				t.Fatalf("%s: order %s decrypted to %s, want %s", tc.topic, id, m.Body, want[id])
			}
			delete(want, m.Metadata["order"])
		}
		if len(want) != 0 {
			t.Fatalf("%s: %d purchases not received", tc.topic, len(want))
		}
		_ = sub.Shutdown(ctx)
	}
}
