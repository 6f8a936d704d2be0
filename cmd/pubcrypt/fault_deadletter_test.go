package main

import (
	"errors"
	"maps"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/pubcrypt/pubcrypt/fault"
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
