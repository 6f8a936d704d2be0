package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"
	"unicode/utf8"

	"gocloud.dev/pubsub"

	"github.com/pubcrypt/pubcrypt/fault"
)

// The line format of `produce --from` (README "Your own data"). One message per line, a
// JSON value:
//
//   - an object whose keys are "body" and, optionally, "metadata" and "key", and no
//     other, is a record: "body" is the message body — a JSON string gives its
//     contents (UTF-8, without the quotes), any other JSON value its JSON text as it
//     appears on the line; "metadata" an object of string values, the message's metadata
//     (headers); "key" a string, sent as the metadata entry "key" (record keys of the
//     broker are not set: see the README);
//   - any other JSON value (an object without "body", or with other keys too, an array,
//     a number, ...) is the body itself, the line as it is without the surrounding
//     whitespace, with no metadata;
//   - a line of only whitespace is skipped.
//
// A line that is not JSON, or a record whose metadata or key is not as above, stops the
// command with an error naming the line number: the lines before it were sent, nothing
// from it on is. Lines can be up to maxRecordLine bytes.
const maxRecordLine = 16 << 20

// recordKeyMetadata is the metadata entry the "key" of a record travels as.
const recordKeyMetadata = "key"

// lineError is a line of --from that cannot be sent: a fault of that message.
type lineError struct {
	line int
	err  error
}

func (e *lineError) Error() string           { return fmt.Sprintf("line %d: %v", e.line, e.err) }
func (e *lineError) Unwrap() error           { return e.err }
func (e *lineError) FaultClass() fault.Class { return fault.Message }

// parseRecord reads one line of the format above; nil without error for a blank line.
func parseRecord(line []byte) (*pubsub.Message, error) {
	line = bytes.TrimSpace(line)
	if len(line) == 0 {
		return nil, nil
	}
	if !json.Valid(line) {
		if !utf8.Valid(line) {
			return nil, errors.New("not JSON (and not UTF-8)")
		}
		var v any
		err := json.Unmarshal(line, &v) // for the position and reason; never the content
		var se *json.SyntaxError
		if errors.As(err, &se) {
			return nil, fmt.Errorf("not JSON: invalid character at byte %d", se.Offset)
		}
		return nil, errors.New("not JSON")
	}
	var obj map[string]json.RawMessage
	if line[0] != '{' || json.Unmarshal(line, &obj) != nil || !isRecord(obj) {
		return &pubsub.Message{Body: append([]byte(nil), line...)}, nil
	}
	m := &pubsub.Message{}
	var s string
	if json.Unmarshal(obj["body"], &s) == nil {
		m.Body = []byte(s)
	} else {
		m.Body = append([]byte(nil), obj["body"]...)
	}
	if raw, ok := obj["metadata"]; ok && string(raw) != "null" {
		if err := json.Unmarshal(raw, &m.Metadata); err != nil {
			return nil, errors.New(`"metadata" must be an object of string values`)
		}
	}
	if raw, ok := obj["key"]; ok && string(raw) != "null" {
		var key string
		if err := json.Unmarshal(raw, &key); err != nil {
			return nil, errors.New(`"key" must be a string`)
		}
		if v, ok := m.Metadata[recordKeyMetadata]; ok && v != key {
			return nil, fmt.Errorf(`"key" and the metadata entry %q differ`, recordKeyMetadata)
		}
		if m.Metadata == nil {
			m.Metadata = map[string]string{}
		}
		m.Metadata[recordKeyMetadata] = key
	}
	return m, nil
}

// isRecord reports whether obj has "body" and no key but "body", "metadata" and "key".
func isRecord(obj map[string]json.RawMessage) bool {
	if _, ok := obj["body"]; !ok {
		return false
	}
	for k := range obj {
		if k != "body" && k != "metadata" && k != "key" {
			return false
		}
	}
	return true
}

// produceRecords sends the lines of r in order, one send at a time, up to count messages
// (0: all). It stops at the first line that cannot be sent (a *lineError) or send that
// fails, and returns how many were sent.
func produceRecords(ctx context.Context, top *pubsub.Topic, r io.Reader, count int, interval, timeout time.Duration, each func(line int, m *pubsub.Message)) (int, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), maxRecordLine)
	sent, line := 0, 0
	for (count == 0 || sent < count) && sc.Scan() {
		line++
		m, err := parseRecord(sc.Bytes())
		if err != nil {
			return sent, &lineError{line, err}
		}
		if m == nil {
			continue
		}
		if err := send(ctx, top, m, timeout); err != nil {
			if ctx.Err() != nil {
				return sent, nil // interrupted: what was sent is reported
			}
			if fault.IsMessage(err) {
				return sent, &lineError{line, err}
			}
			return sent, fault.Mark(fmt.Errorf("send line %d: %w", line, err), fault.Environment)
		}
		sent++
		each(line, m)
		if interval > 0 {
			select {
			case <-time.After(interval):
			case <-ctx.Done():
				return sent, nil
			}
		}
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return sent, &lineError{line + 1, fmt.Errorf("longer than %d bytes", maxRecordLine)}
		}
		return sent, fmt.Errorf("read line %d: %w", line+1, err)
	}
	return sent, nil
}
