package wire

import (
	"bytes"
	"encoding/json"
)

// ScalarProblem says why ScalarAt found no value.
type ScalarProblem int

const (
	// ScalarFound: the value was found.
	ScalarFound ScalarProblem = iota
	// ScalarNotObject: the body is not a JSON object down to the path.
	ScalarNotObject
	// ScalarMissing: a key of the path is not there.
	ScalarMissing
	// ScalarBadString: the value is a JSON string that does not decode.
	ScalarBadString
	// ScalarNotScalar: the value is neither a string nor a number.
	ScalarNotScalar
)

// ScalarAt returns the value at path (keys of nested objects) in a JSON body: a string's
// text, unescaped, or a number's JSON text as written. A message's subject and a Kafka
// record key taken from a JSON field are read this way.
func ScalarAt(body []byte, path []string) (string, ScalarProblem) {
	raw := json.RawMessage(body)
	for _, step := range path {
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(raw, &obj); err != nil || obj == nil {
			return "", ScalarNotObject
		}
		v, ok := obj[step]
		if !ok {
			return "", ScalarMissing
		}
		raw = v
	}
	raw = bytes.TrimSpace(raw)
	switch {
	case len(raw) > 0 && raw[0] == '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return "", ScalarBadString
		}
		return s, ScalarFound
	case len(raw) > 0 && (raw[0] == '-' || '0' <= raw[0] && raw[0] <= '9'):
		return string(raw), ScalarFound
	}
	return "", ScalarNotScalar
}
