package broker

import (
	"errors"
	"fmt"
	"unicode/utf8"
)

// ErrTooLarge is wrapped by every error of Limits.Check: the message would be refused by
// the broker (or silently truncated by some), so it is not sent at all.
var ErrTooLarge = errors.New("message exceeds the broker's limits")

// Limits are what a broker accepts in one message. A zero field means no limit; the zero
// Limits checks nothing. Sizes are in bytes and are checked on the message as the wrapper
// hands it to gocloud, that is after encryption: the envelope entries count too.
type Limits struct {
	// Name is the broker's name in error messages ("Google Pub/Sub").
	Name string
	// MaxBodyBytes bounds the body alone.
	MaxBodyBytes int
	// MaxMetadataEntries bounds the number of metadata entries (attributes, headers)
	// pubcrypt may use; entries the driver adds itself are already deducted.
	MaxMetadataEntries int
	// MaxKeyBytes and MaxValueBytes bound one metadata key and one metadata value.
	MaxKeyBytes   int
	MaxValueBytes int
	// MaxTotalBytes bounds body and metadata together, where the broker counts both
	// (SQS's 1 MiB includes the attributes, SNS's 256 KiB as well).
	MaxTotalBytes int
	// EntryOverhead is what the broker's framing adds per metadata entry, counted
	// against MaxTotalBytes (Kafka's varint lengths, NATS's ": " and CRLF).
	EntryOverhead int
	// TextOnlyBody: the broker carries text only, and gocloud base64-encodes a body that
	// is not valid UTF-8 (4/3 of its size) and adds one attribute, "base64encoded",
	// which then counts against MaxMetadataEntries and MaxTotalBytes (SQS, SNS).
	TextOnlyBody bool
}

// base64Attr is the attribute gocloud's awssnssqs driver adds to a base64-encoded body.
const base64Attr = "base64encoded"

// LimitsFor returns the limits of the broker behind a gocloud URL scheme, as documented
// by its vendor for a default (standard-tier) setup. An unknown scheme, mem and rabbit
// get no limits: Check then accepts everything and the broker has the last word.
func LimitsFor(scheme string) Limits {
	switch scheme {
	case "kafka", "kgo":
		// Kafka: message.max.bytes (broker) defaults to 1048588 bytes per record batch
		// (https://kafka.apache.org/documentation/#brokerconfigs_message.max.bytes), of
		// which the batch header takes 61. gocloud's kafkapubsub produces with sarama,
		// which counts a record as at most 36 bytes of framing + key + value + per
		// header key + value + 10 (ProducerMessage.ByteSize) against its own
		// Producer.MaxMessageBytes of 1 MiB. Counting that way against the broker's
		// budget keeps a one-record batch under both. Headers have no count limit.
		// kgo:// counts records the same way (at most the same framing) and raises
		// franz-go's batch bound to the broker's default.
		return Limits{Name: "Kafka", MaxTotalBytes: 1048588 - 61 - 36, EntryOverhead: 10}
	case "gcppubsub", "gcppubsubv2":
		// Google Pub/Sub (https://cloud.google.com/pubsub/quotas#resource_limits):
		// message (data + attributes) 10 MB, 100 attributes, key ≤ 256 bytes,
		// value ≤ 1024 bytes. Neither pstest nor the emulator enforces the attribute
		// limits, which is one more reason to check here.
		return Limits{Name: "Google Pub/Sub", MaxBodyBytes: 10_000_000, MaxTotalBytes: 10_000_000,
			MaxMetadataEntries: 100, MaxKeyBytes: 256, MaxValueBytes: 1024}
	case "awssqs":
		// Amazon SQS (https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/quotas-messages.html):
		// 1 MiB per message including attributes, 10 attributes per message. gocloud
		// adds "base64encoded" to a binary body, so pubcrypt keeps 9 for itself.
		return Limits{Name: "Amazon SQS", MaxTotalBytes: 1 << 20, MaxMetadataEntries: 10, TextOnlyBody: true}
	case "awssns":
		// Amazon SNS (https://docs.aws.amazon.com/general/latest/gr/sns.html): 256 KiB
		// per message including attributes; 10 attributes, the most an SQS subscriber
		// receives (raw delivery). Same base64 rule as SQS.
		return Limits{Name: "Amazon SNS", MaxTotalBytes: 256 << 10, MaxMetadataEntries: 10, TextOnlyBody: true}
	case "nats":
		// NATS: max_payload defaults to 1 MiB (https://docs.nats.io/running-a-nats-service/configuration#limits);
		// with natsv2 headers travel in the same payload as "NATS/1.0\r\n" + "k: v\r\n"
		// per header + "\r\n".
		return Limits{Name: "NATS", MaxTotalBytes: 1<<20 - len("NATS/1.0\r\n\r\n"), EntryOverhead: len(": \r\n")}
	case "azuresb":
		// Azure Service Bus standard tier (https://learn.microsoft.com/azure/service-bus-messaging/service-bus-quotas):
		// 256 KiB per message including application properties (premium: 100 MB).
		return Limits{Name: "Azure Service Bus", MaxTotalBytes: 256 << 10}
	case "rabbit":
		// RabbitMQ: no practical limit for pubcrypt's purposes; the server's
		// max_message_size (16 MiB by default since 4.0, 512 MiB at most) is a
		// per-deployment setting the client cannot know, so the broker decides.
		return Limits{Name: "RabbitMQ"}
	case "mem":
		return Limits{Name: "in-memory pubsub"}
	}
	return Limits{Name: scheme}
}

// Check reports whether a message with this body and metadata fits the broker. The error
// names the limit and the broker, the metadata key at fault if any, and sizes; never a
// value or the body.
func (l Limits) Check(body []byte, md map[string]string) error {
	bodyLen, entries := len(body), len(md)
	total := 0
	if l.TextOnlyBody && !utf8.Valid(body) {
		bodyLen = (len(body) + 2) / 3 * 4 // standard base64 with padding
		entries++
		total += len(base64Attr) + len("true") + l.EntryOverhead
	}
	total += bodyLen
	if l.MaxBodyBytes > 0 && bodyLen > l.MaxBodyBytes {
		return l.errorf("message body of %s exceeds %s's %s limit", size(bodyLen), l.Name, size(l.MaxBodyBytes))
	}
	if l.MaxMetadataEntries > 0 && entries > l.MaxMetadataEntries {
		return l.errorf("message has %d metadata entries (pubcrypt's envelope included); %s allows %d", entries, l.Name, l.MaxMetadataEntries)
	}
	for k, v := range md {
		if l.MaxKeyBytes > 0 && len(k) > l.MaxKeyBytes {
			return l.errorf("metadata key %.48q… is %d bytes; %s allows %d", k, len(k), l.Name, l.MaxKeyBytes)
		}
		if l.MaxValueBytes > 0 && len(v) > l.MaxValueBytes {
			return l.errorf("metadata value of key %q is %d bytes; %s allows %d", k, len(v), l.Name, l.MaxValueBytes)
		}
		total += len(k) + len(v) + l.EntryOverhead
	}
	if l.MaxTotalBytes > 0 && total > l.MaxTotalBytes {
		return l.errorf("message of %s (body and metadata) exceeds %s's %s limit", size(total), l.Name, size(l.MaxTotalBytes))
	}
	return nil
}

func (l Limits) errorf(format string, args ...any) error {
	return tooLarge(fmt.Sprintf(format, args...))
}

// tooLarge is a Check error: its text says which limit, errors.Is matches ErrTooLarge.
type tooLarge string

func (e tooLarge) Error() string        { return string(e) }
func (e tooLarge) Is(target error) bool { return target == ErrTooLarge }

// size formats n bytes as people read broker documentation: MB for decimal limits, MiB
// and KiB for binary ones.
func size(n int) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1_000_000 && n%1_000_000 == 0:
		return fmt.Sprintf("%d MB", n/1_000_000)
	case n >= 1<<10 && n%(1<<10) == 0 && n < 1<<20:
		return fmt.Sprintf("%d KiB", n>>10)
	case n >= 1000<<10: // 1.0 MiB reads better than 1023.9 KiB
		return fmt.Sprintf("%.1f MiB (%d bytes)", float64(n)/(1<<20), n)
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB (%d bytes)", float64(n)/(1<<10), n)
	}
	return fmt.Sprintf("%d bytes", n)
}

// ChunkSize returns the largest plaintext chunk, at most preferred, whose encrypted
// message fits these limits with overhead bytes of ciphertext expansion and metadata: a
// file sender splits files into chunks this size. Binary chunks on a text-only broker are
// base64-encoded, so they get 3/4 of the room.
func (l Limits) ChunkSize(preferred, overhead int) int {
	room := 0
	for _, m := range []int{l.MaxBodyBytes, l.MaxTotalBytes} {
		if m > 0 && (room == 0 || m < room) {
			room = m
		}
	}
	if room == 0 {
		return preferred
	}
	if l.TextOnlyBody {
		room = room * 3 / 4
	}
	room -= overhead
	if room < 1024 {
		room = 1024
	}
	return min(preferred, room)
}
