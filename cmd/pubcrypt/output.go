package main

import (
	"encoding/base64"
	"encoding/json"
	"flag"
	"io"

	"gocloud.dev/pubsub"

	"github.com/pubcrypt/pubcrypt/internal/broker"
)

// The --output of consume and peek: text for people (the default), json for programs:
// one JSON object per message and line on stdout, and every summary, refusal and log
// line on stderr, so that `pubcrypt consume --output json | jq` sees messages only.
const (
	outputText = "text"
	outputJSON = "json"
)

func outputFlag(fs *flag.FlagSet) *string {
	return fs.String("output", outputText, "text, or json: one JSON object per message and line on stdout (body, or body_base64 when the body is not JSON; metadata; key; source position), summaries on stderr")
}

func checkOutput(v string) error {
	if v != outputText && v != outputJSON {
		return usagef("--output must be text or json, not %q", v)
	}
	return nil
}

// jsonMessage is a message as --output json prints it. Body holds the body itself when
// it is valid JSON, byte for byte; otherwise BodyBase64 holds it, standard base64.
type jsonMessage struct {
	ID         string            `json:"id,omitempty"`
	Body       json.RawMessage   `json:"body,omitempty"`
	BodyBase64 *string           `json:"body_base64,omitempty"`
	Metadata   map[string]string `json:"metadata"`
	Size       int               `json:"size"`
	KeyID      string            `json:"key_id,omitempty"`      // consume: the key that wrapped the data key
	KeyVersion int               `json:"key_version,omitempty"` // consume: its version
	Fields     *bool             `json:"fields,omitempty"`      // consume: fields protected, not the whole body
	Source     *jsonSource       `json:"source,omitempty"`      // where the broker had it (Kafka)
}

type jsonSource struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	Offset    int64  `json:"offset"`
}

func newJSONMessage(m *pubsub.Message) *jsonMessage {
	j := &jsonMessage{ID: m.LoggableID, Metadata: m.Metadata, Size: len(m.Body)}
	if j.Metadata == nil {
		j.Metadata = map[string]string{}
	}
	if len(m.Body) > 0 && json.Valid(m.Body) {
		j.Body = json.RawMessage(m.Body)
	} else {
		s := base64.StdEncoding.EncodeToString(m.Body)
		j.BodyBase64 = &s
	}
	if topic, p, off, ok := broker.KafkaPosition(m); ok {
		j.Source = &jsonSource{Topic: topic, Partition: p, Offset: off}
	}
	return j
}

// writeJSONLine writes v as one line. encoding/json keeps a RawMessage body as it is,
// only compacting whitespace outside strings, so a JSON body keeps its values exactly.
func writeJSONLine(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}
