package main

import (
	"net/url"

	"gocloud.dev/pubsub"

	"github.com/pubcrypt/pubcrypt/crypttopic"
	"github.com/pubcrypt/pubcrypt/internal/broker"
)

// The record keys of `pubcrypt encrypt` (docs/FORMAT.md section 3.2): the key of each
// source record is carried into the destination record, protected unless
// --record-key=clear says otherwise, through a metadata entry that the destination's
// key_name sends as the record key.

const (
	recordKeyDeterministic = "deterministic"
	recordKeyClear         = "clear"
	recordKeyDrop          = "drop"
	// defaultKeyEntry carries the record key when the destination URL names no key_name:
	// the entry `produce` puts a line's key into, and the key_name consumers give.
	defaultKeyEntry = "key"
)

// recordKeyDestination returns the destination URL and the metadata entry that carries
// each source record's key to it under --record-key=mode, and sets opts' record-key
// mode. On a Kafka destination whose URL names no key_name, the entry is defaultKeyEntry
// and the URL gets key_name=key. With drop, or on another broker, no key is carried: entry
// "".
func recordKeyDestination(rawURL, mode string, opts *crypttopic.Options) (string, string, error) {
	switch mode {
	case recordKeyDeterministic, recordKeyClear, recordKeyDrop:
	default:
		return "", "", usagef("--record-key must be deterministic, clear or drop, not %q", mode)
	}
	if mode == recordKeyClear {
		opts.RecordKey.Mode = crypttopic.RecordKeyClear
	}
	u, err := url.Parse(rawURL)
	if mode == recordKeyDrop || err != nil || !broker.IsKafka(u.Scheme) {
		return rawURL, "", nil
	}
	q := u.Query()
	if q.Has("key_field") {
		// The key comes from the body: the source record's key is not carried.
		return rawURL, "", nil
	}
	entry := q.Get("key_name")
	if entry == "" {
		entry = defaultKeyEntry
		q.Set("key_name", entry)
		u.RawQuery = q.Encode()
	}
	if q.Get("record_key") == recordKeyClear && mode != recordKeyClear {
		return "", "", usagef("--topic says record_key=clear and --record-key %s: say clear in one place, or drop record_key from the URL", mode)
	}
	return u.String(), entry, nil
}

// withRecordKey returns the metadata of src with src's Kafka record key in entry, unless
// entry is "", src has no record key, or its metadata has the entry already (a source
// subscription with key_name=entry put the key there). src's metadata is not modified.
func withRecordKey(src *pubsub.Message, entry string) map[string]string {
	if entry == "" {
		return src.Metadata
	}
	if _, ok := src.Metadata[entry]; ok {
		return src.Metadata
	}
	key, ok := broker.RecordKey(src)
	if !ok {
		return src.Metadata
	}
	md := make(map[string]string, len(src.Metadata)+1)
	for k, v := range src.Metadata {
		md[k] = v
	}
	md[entry] = string(key)
	return md
}
