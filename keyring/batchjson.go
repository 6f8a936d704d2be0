package keyring

import "strings"

// batchAnswer is Vault's answer to a batch_input request, as far as pubcrypt reads it.
type batchAnswer struct {
	Data struct {
		BatchResults []batchResult `json:"batch_results"`
	} `json:"data"`
}

// fastDecode fills a from a JSON answer if it can without reflection, and reports
// whether it did. The answers Vault gives every batch (ASCII strings without escapes,
// small integers) are read by readBatchAnswer: at 1,000 items a request, encoding/json
// spent about 1.5 µs per item here, the largest part of the client's cost for a transit
// field after the field scanner. Anything else (an error text with quotes, say) is left
// to encoding/json (Vault.do), as every answer was before, with the same result:
// FuzzBatchAnswer holds the two to that.
func (a *batchAnswer) fastDecode(b []byte) bool {
	results, ok := readBatchAnswer(b)
	if ok {
		a.Data.BatchResults = results
	}
	return ok
}

// readBatchAnswer reads the batch_results of an answer that keeps to the subset it
// knows, and reports false for anything outside it (the caller then uses encoding/json):
// the answer must be a JSON object; "data", "batch_results" and the fields of a result
// must be spelled exactly so and appear at most once (encoding/json would match other
// cases and merge repeats); result strings must be printable ASCII without escapes;
// key_version a small integer. Other members are skipped, checked as strictly as
// encoding/json checks them; what follows the answer is ignored, as json.Decoder does.
func readBatchAnswer(b []byte) ([]batchResult, bool) {
	// One copy of the answer, of which every string read is a part.
	r := &jsonReader{b: string(b)}
	var results []batchResult
	var seenData, seenResults bool
	ok := r.object(func(key string) bool {
		return r.only(key, "data", &seenData, func() bool {
			return r.object(func(key string) bool {
				return r.only(key, "batch_results", &seenResults, func() bool {
					results = []batchResult{}
					return r.array(func() bool {
						var res batchResult
						if !r.object(func(key string) bool { return r.result(&res, key) }) {
							return false
						}
						results = append(results, res)
						return true
					})
				})
			})
		})
	})
	return results, ok
}

// only reads the value of member key of an object in which readBatchAnswer wants name
// alone: read reads it the first time (null leaves it unset, as encoding/json does), and
// other members are skipped. name a second time, or in other letter cases, ends the
// fast path.
func (r *jsonReader) only(key, name string, seen *bool, read func() bool) bool {
	switch {
	case key == name && !*seen:
		*seen = true
		return r.null() || read()
	case strings.EqualFold(key, name):
		return false
	}
	return r.skip(0)
}

// result reads the value of member key of a batch result into res.
func (r *jsonReader) result(res *batchResult, key string) bool {
	var dst *string
	switch key {
	case "ciphertext":
		dst = &res.Ciphertext
	case "plaintext":
		dst = &res.Plaintext
	case "encoded_value":
		dst = &res.EncodedValue
	case "decoded_value":
		dst = &res.DecodedValue
	case "error":
		dst = &res.Error
	case "key_version":
		if r.null() {
			return true
		}
		n, ok := r.smallInt()
		res.KeyVersion = n
		return ok
	default:
		for _, f := range [...]string{"ciphertext", "plaintext", "encoded_value", "decoded_value", "error", "key_version"} {
			if strings.EqualFold(key, f) {
				return false
			}
		}
		return r.skip(0)
	}
	if r.null() {
		return true
	}
	s, ok := r.plainString()
	*dst = s
	return ok
}

// jsonReader reads JSON from b at i.
type jsonReader struct {
	b string
	i int
}

// maxDepth bounds the nesting of skipped values; deeper answers go to encoding/json.
const maxDepth = 64

func (r *jsonReader) ws() {
	for r.i < len(r.b) {
		switch r.b[r.i] {
		case ' ', '\t', '\n', '\r':
			r.i++
		default:
			return
		}
	}
}

// next skips white space and reports whether c follows, consuming it if so.
func (r *jsonReader) next(c byte) bool {
	r.ws()
	if r.i < len(r.b) && r.b[r.i] == c {
		r.i++
		return true
	}
	return false
}

// null consumes a null if one follows.
func (r *jsonReader) null() bool {
	r.ws()
	if strings.HasPrefix(r.b[r.i:], "null") {
		r.i += 4
		return true
	}
	return false
}

// object reads an object whose member keys are plain strings, calling member with each
// key once the reader is at its value; member must consume the value.
func (r *jsonReader) object(member func(key string) bool) bool {
	return r.members(r.plainString, member)
}

// members reads an object, its keys with key.
func (r *jsonReader) members(key func() (string, bool), member func(key string) bool) bool {
	if !r.next('{') {
		return false
	}
	if r.next('}') {
		return true
	}
	for {
		r.ws()
		k, ok := key()
		if !ok || !r.next(':') || !member(k) {
			return false
		}
		if r.next('}') {
			return true
		}
		if !r.next(',') {
			return false
		}
	}
}

// array reads an array, calling elem at each element; elem must consume it.
func (r *jsonReader) array(elem func() bool) bool {
	if !r.next('[') {
		return false
	}
	if r.next(']') {
		return true
	}
	for {
		if !elem() {
			return false
		}
		if r.next(']') {
			return true
		}
		if !r.next(',') {
			return false
		}
	}
}

// plainString reads a string of printable ASCII without escapes.
func (r *jsonReader) plainString() (string, bool) {
	r.ws()
	if r.i >= len(r.b) || r.b[r.i] != '"' {
		return "", false
	}
	start := r.i + 1
	for j := start; j < len(r.b); j++ {
		switch c := r.b[j]; {
		case c == '"':
			r.i = j + 1
			return r.b[start:j], true
		case c < 0x20 || c >= 0x7f || c == '\\':
			return "", false
		}
	}
	return "", false
}

// smallInt reads an integer of at most nine digits: what a key version is.
func (r *jsonReader) smallInt() (int, bool) {
	r.ws()
	neg := r.i < len(r.b) && r.b[r.i] == '-'
	if neg {
		r.i++
	}
	start, n := r.i, 0
	for r.i < len(r.b) && r.b[r.i] >= '0' && r.b[r.i] <= '9' && r.i-start < 10 {
		n = n*10 + int(r.b[r.i]-'0')
		r.i++
	}
	digits := r.i - start
	switch {
	case digits == 0 || digits > 9, digits > 1 && r.b[start] == '0':
		return 0, false
	case r.i < len(r.b) && (r.b[r.i] == '.' || r.b[r.i] == 'e' || r.b[r.i] == 'E'):
		return 0, false // a fraction or exponent: encoding/json refuses it for an int
	}
	if neg {
		n = -n
	}
	return n, true
}

// skip consumes one JSON value of any kind, accepting exactly what encoding/json accepts.
func (r *jsonReader) skip(depth int) bool {
	if depth > maxDepth {
		return false
	}
	r.ws()
	if r.i >= len(r.b) {
		return false
	}
	switch c := r.b[r.i]; {
	case c == '"':
		return r.skipString()
	case c == '{':
		// Keys of skipped objects may hold escapes, as anywhere in JSON.
		key := func() (string, bool) { return "", r.skipString() }
		return r.members(key, func(string) bool { return r.skip(depth + 1) })
	case c == '[':
		return r.array(func() bool { return r.skip(depth + 1) })
	case c == 't':
		return r.literal("true")
	case c == 'f':
		return r.literal("false")
	case c == 'n':
		return r.literal("null")
	case c == '-' || c >= '0' && c <= '9':
		return r.skipNumber()
	}
	return false
}

func (r *jsonReader) literal(s string) bool {
	if !strings.HasPrefix(r.b[r.i:], s) {
		return false
	}
	r.i += len(s)
	return true
}

// skipString consumes a string: no control characters, only JSON's escapes.
func (r *jsonReader) skipString() bool {
	if r.i >= len(r.b) || r.b[r.i] != '"' {
		return false
	}
	for j := r.i + 1; j < len(r.b); j++ {
		switch c := r.b[j]; {
		case c == '"':
			r.i = j + 1
			return true
		case c < 0x20:
			return false
		case c == '\\':
			j++
			if j >= len(r.b) {
				return false
			}
			switch r.b[j] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if j+4 >= len(r.b) {
					return false
				}
				for _, h := range []byte(r.b[j+1 : j+5]) {
					if !('0' <= h && h <= '9' || 'a' <= h && h <= 'f' || 'A' <= h && h <= 'F') {
						return false
					}
				}
				j += 4
			default:
				return false
			}
		}
	}
	return false
}

// skipNumber consumes -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func (r *jsonReader) skipNumber() bool {
	b := r.b
	i := r.i
	if i < len(b) && b[i] == '-' {
		i++
	}
	digits := func() int {
		start := i
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
		return i - start
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case digits() == 0:
		return false
	}
	if i < len(b) && b[i] == '.' {
		i++
		if digits() == 0 {
			return false
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if digits() == 0 {
			return false
		}
	}
	r.i = i
	return true
}
