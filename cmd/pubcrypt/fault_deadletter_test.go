package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"gocloud.dev/pubsub"

	"github.com/pubcrypt/pubcrypt/fault"
	"github.com/pubcrypt/pubcrypt/internal/broker"
	"github.com/pubcrypt/pubcrypt/internal/filestream"
)

// TestDeadLetterMetadataRoundTrip: the raw message's metadata comes back exactly from a
// dead letter's, reserved and look-alike keys included, and the added entries say why.
func TestDeadLetterMetadataRoundTrip(t *testing.T) {
	reason := fault.Mark(errors.New(`field "card_number": fpe needs a JSON string`), fault.Message)
	now := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	for _, raw := range []map[string]string{
		nil,
		{"order": "o-1"},
		{"order": "o-2", "pubcrypt": "v1 aes-256-gcm pubcrypt AAAA", "pubcrypt-dek": "vault:v1:xyz", "pubcrypt-protect": "name=transit"},
		{"dead-letter-reason": "an earlier dead letter", "dead-letter-raw-pubcrypt": "nested", "x": ""},
	} {
		md := deadLetterMetadata(raw, reason, "topic t partition 0 offset 5", "kafka://g?topic=t", "pubcrypt encrypt", now)
		for k := range md {
			if strings.HasPrefix(k, "pubcrypt") {
				t.Fatalf("dead letter carries reserved key %q: %v", k, md)
			}
		}
		if md[deadLetterReason] != reason.Error() || md[deadLetterClass] != "message" || md[deadLetterSource] != "topic t partition 0 offset 5" ||
			md[deadLetterBy] != "pubcrypt encrypt" || md[deadLetterTime] != "2026-12-02T10:00:00Z" || md[deadLetterSub] != "kafka://g?topic=t" {
			t.Fatalf("added entries: %v", md)
		}
		if got := rawMetadata(md); !maps.Equal(got, raw) && !(len(got) == 0 && len(raw) == 0) {
			t.Fatalf("raw metadata back: %v, want %v", got, raw)
		}
	}
	long := fault.Mark(errors.New(strings.Repeat("é", 2000)), fault.Message)
	md := deadLetterMetadata(nil, long, "", "", "pubcrypt consume", now)
	if r := md[deadLetterReason]; len(r) > maxReasonBytes || !strings.HasSuffix(r, "…") || !utf8.ValidString(r) || strings.ContainsRune(r, utf8.RuneError) {
		t.Fatalf("long reason: %d bytes %q…", len(r), r[:20])
	}
}

// TestFileDeadLetterHidesTheName: a file's name travels encrypted, so the dead letter of
// a refused chunk (clear metadata on a topic) and its log line must not carry it, though
// TransferError's text and ErrUnsafeName's detail quote it. Real Vault for the dead
// letter's encryption.
func TestFileDeadLetterHidesTheName(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	kr := startVault(t).keyring(t)
	dl, err := openDeadLetter(ctx, "mem://file-dead-letter", kr, broker.Options{}, "mem://chunks", "pubcrypt receive-files")
	if err != nil {
		t.Fatal(err)
	}
	defer shutdown(dl.topic)
	sub, err := pubsub.OpenSubscription(ctx, "mem://file-dead-letter")
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Shutdown(context.Background())
	// The chunks, as received from a broker (broker.Position asks the message).
	chunks, err := pubsub.OpenTopic(ctx, "mem://file-chunks")
	if err != nil {
		t.Fatal(err)
	}
	defer chunks.Shutdown(context.Background())
	chunkSub, err := pubsub.OpenSubscription(ctx, "mem://file-chunks")
	if err != nil {
		t.Fatal(err)
	}
	defer chunkSub.Shutdown(context.Background())
	const secret = "q3-layoffs-SECRETNAME.xlsx"
	var logs bytes.Buffer
	defer slog.SetDefault(slog.Default())
	slog.SetDefault(slog.New(slog.NewTextHandler(&logs, nil)))
	for _, herr := range []error{
		&filestream.TransferError{ID: "AAAAAAAAAAAAAAAAAAAAAA", Name: secret, Index: 0, Err: filestream.ErrExists},
		&filestream.TransferError{ID: "AAAAAAAAAAAAAAAAAAAAAA", Name: "../" + secret, Index: 0,
			Err: fmt.Errorf("%w: %q is a path, not a base name", filestream.ErrUnsafeName, "../"+secret)},
	} {
		if err := chunks.Send(ctx, &pubsub.Message{Body: []byte("chunk"), Metadata: map[string]string{"n": "1"}}); err != nil {
			t.Fatal(err)
		}
		m, err := chunkSub.Receive(ctx)
		if err != nil {
			t.Fatal(err)
		}
		m.Ack()
		if err := fileMessageFault(ctx, onFaultDeadLetter, dl, m, herr); err != nil {
			t.Fatal(err)
		}
		got, err := sub.Receive(ctx)
		if err != nil {
			t.Fatal(err)
		}
		got.Ack()
		reason := got.Metadata[deadLetterReason]
		if strings.Contains(reason, "SECRETNAME") {
			t.Errorf("dead-letter reason carries the file name: %q", reason)
		}
		if !strings.Contains(reason, "AAAAAAAAAAAAAAAAAAAAAA") || got.Metadata[deadLetterClass] != "message" {
			t.Errorf("dead letter does not name the transfer or its class: %v", got.Metadata)
		}
	}
	if strings.Contains(logs.String(), "SECRETNAME") {
		t.Errorf("log carries the file name:\n%s", logs.String())
	}
}
