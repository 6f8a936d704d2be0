package broker

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestLimitsCheck(t *testing.T) {
	secret := strings.Repeat("s", 1500) // a value that must never show in an error
	binary := bytes.Repeat([]byte{0xff}, 3*1000)
	entries := func(n int) map[string]string {
		md := make(map[string]string, n)
		for i := range n {
			md[fmt.Sprintf("k%d", i)] = "v"
		}
		return md
	}
	for _, tc := range []struct {
		name    string
		scheme  string
		body    []byte
		md      map[string]string
		wantErr string // "" means the message fits
	}{
		{"mem takes anything", "mem", make([]byte, 64<<20), entries(1000), ""},
		{"unknown scheme takes anything", "carrierpigeon", make([]byte, 64<<20), nil, ""},
		{"rabbit takes anything", "rabbit", make([]byte, 64<<20), nil, ""},
		{"pubsub body at limit", "gcppubsub", make([]byte, 10_000_000), nil, ""},
		{"pubsub body over", "gcppubsubv2", make([]byte, 10_000_001), nil,
			"message body of 9.5 MiB (10000001 bytes) exceeds Google Pub/Sub's 10 MB limit"},
		{"pubsub value at limit", "gcppubsub", nil, map[string]string{"X": secret[:1024]}, ""},
		{"pubsub value over", "gcppubsub", nil, map[string]string{"X": secret},
			`metadata value of key "X" is 1500 bytes; Google Pub/Sub allows 1024`},
		{"pubsub key over", "gcppubsub", nil, map[string]string{strings.Repeat("k", 257): "v"},
			"is 257 bytes; Google Pub/Sub allows 256"},
		{"pubsub 100 attributes", "gcppubsub", nil, entries(100), ""},
		{"pubsub 101 attributes", "gcppubsub", nil, entries(101),
			"message has 101 metadata entries (pubcrypt's envelope included); Google Pub/Sub allows 100"},
		{"sqs text body, 10 attributes", "awssqs", []byte("hello"), entries(10), ""},
		{"sqs binary body, 9 attributes + base64encoded", "awssqs", binary, entries(9), ""},
		{"sqs binary body, 10 attributes + base64encoded", "awssqs", binary, entries(10),
			"message has 11 metadata entries (pubcrypt's envelope included); Amazon SQS allows 10"},
		{"sqs 1 MiB text", "awssqs", make([]byte, 1<<20), nil, ""},
		{"sqs 1 MiB text + attribute", "awssqs", make([]byte, 1<<20), map[string]string{"a": "b"},
			"message of 1.0 MiB (1048578 bytes) (body and metadata) exceeds Amazon SQS's 1 MiB limit"},
		{"sqs binary grows by base64", "awssqs", bytes.Repeat([]byte{0xff}, 800_000), nil,
			"exceeds Amazon SQS's 1 MiB limit"},
		{"sns 256 KiB", "awssns", make([]byte, 256<<10+1), nil, "exceeds Amazon SNS's 256 KiB limit"},
		{"kafka just fits", "kafka", make([]byte, 1048588-61-36-12), map[string]string{"a": "b"}, ""},
		{"kafka header framing counts", "kafka", make([]byte, 1048588-61-36-11), map[string]string{"a": "b"},
			"exceeds Kafka's 1.0 MiB (1048491 bytes) limit"},
		{"nats 1 MiB incl. headers", "nats", make([]byte, 1<<20), nil, "exceeds NATS's"},
		{"azure standard 256 KiB", "azuresb", make([]byte, 300<<10), nil, "exceeds Azure Service Bus's 256 KiB limit"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := LimitsFor(tc.scheme).Check(tc.body, tc.md)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("Check: %v, want nil", err)
			case tc.wantErr == "":
				return
			case err == nil:
				t.Fatalf("Check: nil, want %q", tc.wantErr)
			case !errors.Is(err, ErrTooLarge):
				t.Errorf("Check: %v does not match ErrTooLarge", err)
			case !strings.Contains(err.Error(), tc.wantErr):
				t.Errorf("Check: %q, want it to contain %q", err, tc.wantErr)
			}
			if strings.Contains(err.Error(), "sss") {
				t.Errorf("error %q holds a metadata value", err)
			}
		})
	}
}

func TestZeroLimitsCheckNothing(t *testing.T) {
	if err := (Limits{}).Check(make([]byte, 100<<20), map[string]string{strings.Repeat("k", 1<<20): ""}); err != nil {
		t.Fatal(err)
	}
}

func TestChunkSizeFitsTheBroker(t *testing.T) {
	const preferred, overhead = 512 << 10, 4096
	for _, tc := range []struct {
		scheme string
		want   int
	}{
		{"mem", preferred},
		{"kafka", preferred},
		{"gcppubsubv2", preferred},
		{"awssns", (256<<10)*3/4 - overhead},
		{"awssqs", preferred},
	} {
		if got := LimitsFor(tc.scheme).ChunkSize(preferred, overhead); got != tc.want {
			t.Errorf("%s: chunk size %d, want %d", tc.scheme, got, tc.want)
		}
	}
}
