package fields

import (
	"encoding/json"
	"errors"
	"strconv"
	"strings"
)

// match is one value a rule selects: its byte span in the document and its concrete
// path ("items[2].sku").
type match struct {
	start, end int
	rule       int
	path       string
}

// errSyntax means the scanner met something that is not JSON. Callers run json.Valid
// first, so it marks a bug, but it is an error rather than a panic.
var errSyntax = errors.New("invalid JSON")

// locate returns the values the policy selects in doc, in document order (section 4.4).
// doc must be valid JSON (json.Valid). Object keys are compared after JSON unescaping,
// byte for byte. A key that occurs twice in one object is matched both times. Only the
// parts of the document the policy's paths (or its default) lead into are looked at
// closely; the rest is skipped.
func locate(doc []byte, c *compiled) ([]match, error) {
	ms, _, err := locateUsed(doc, c)
	return ms, err
}

// locateUsed is locate, and says which keep rules kept a value (used[rule index]).
func locateUsed(doc []byte, c *compiled) ([]match, []bool, error) {
	s := &scanner{doc: doc, c: c, used: make([]bool, len(c.rules))}
	i := s.ws(0)
	var end int
	var err error
	if i < len(doc) && doc[i] == '{' {
		end, err = s.walk(i, c.start, false)
	} else {
		// A policy addresses objects only (section 4.5): nothing is selected.
		end, err = s.skip(i)
	}
	if err != nil {
		return nil, nil, err
	}
	if s.ws(end) != len(doc) {
		return nil, nil, errSyntax
	}
	return s.found, s.used, nil
}

type scanner struct {
	doc   []byte
	c     *compiled
	path  []pathElem // where the walk is
	bufs  [][]state  // bufs[d]: the states of the values at depth d, reused by siblings
	set   stateSet   // dedupes the states of one step
	found []match
	used  []bool
}

type pathElem struct {
	key   string
	index int // -1 for a key
}

// concretePath spells the walk's position (section 4.2): keys that are names as they
// are, others as "{" base64url(key) "}", indexes in brackets.
func (s *scanner) concretePath() string {
	var b strings.Builder
	for i, e := range s.path {
		if e.index >= 0 {
			b.WriteByte('[')
			b.WriteString(strconv.Itoa(e.index))
			b.WriteByte(']')
			continue
		}
		if i > 0 {
			b.WriteByte('.')
		}
		if validName(e.key) {
			b.WriteString(e.key)
		} else {
			b.WriteByte('{')
			b.WriteString(b64.EncodeToString([]byte(e.key)))
			b.WriteByte('}')
		}
	}
	return b.String()
}

// buf returns the reusable state slice of depth d, empty.
func (s *scanner) buf(d int) []state {
	for len(s.bufs) <= d {
		s.bufs = append(s.bufs, nil)
	}
	return s.bufs[d][:0]
}

// walk reads the value at i, which the states ss have reached, and returns where it ends.
// kept says that a keep rule holds the value or one around it: the default is off.
func (s *scanner) walk(i int, ss []state, kept bool) (int, error) {
	if i >= len(s.doc) {
		return 0, errSyntax
	}
	// The protecting rule that selects this value, if any (section 4.4): the most specific
	// of those whose path ends here. Keep rules only turn the default off.
	best := -1
	var keeps []int
	for _, st := range ss {
		pt := &s.c.pats[st.pat]
		if st.pos != len(pt.steps) {
			continue
		}
		if pt.keep {
			keeps = append(keeps, pt.rule)
			continue
		}
		if best < 0 || pt.moreSpecific(&s.c.pats[best]) {
			best = st.pat
		}
	}
	if best >= 0 {
		return s.selectValue(i, s.c.pats[best].rule)
	}
	for _, r := range keeps {
		s.used[r], kept = true, true
	}
	def := s.c.def >= 0 && !kept
	switch s.doc[i] {
	case '{':
		if len(ss) > 0 || def {
			return s.object(i, ss, kept)
		}
	case '[':
		if len(ss) > 0 || def {
			return s.array(i, ss, kept)
		}
	default:
		if def {
			return s.selectValue(i, s.c.def)
		}
	}
	return s.skip(i)
}

// selectValue records the value at i as selected by rule and returns where it ends.
func (s *scanner) selectValue(i, rule int) (int, error) {
	end, err := s.skip(i)
	if err != nil {
		return 0, err
	}
	s.found = append(s.found, match{start: i, end: end, rule: rule, path: s.concretePath()})
	return end, nil
}

func (s *scanner) object(i int, ss []state, kept bool) (int, error) {
	i = s.ws(i + 1)
	if i < len(s.doc) && s.doc[i] == '}' {
		return i + 1, nil
	}
	def := s.c.def >= 0 && !kept
	for {
		if i >= len(s.doc) || s.doc[i] != '"' {
			return 0, errSyntax
		}
		kend, err := s.skipString(i)
		if err != nil {
			return 0, err
		}
		key, err := s.key(i, kend)
		if err != nil {
			return 0, err
		}
		i = s.ws(kend)
		if i >= len(s.doc) || s.doc[i] != ':' {
			return 0, errSyntax
		}
		i = s.ws(i + 1)
		d := len(s.path) + 1
		next := s.c.advance(s.buf(d), ss, key, false, &s.set)
		s.bufs[d] = next
		if len(next) > 0 || def {
			s.path = append(s.path, pathElem{key: key, index: -1})
			i, err = s.walk(i, next, kept)
			s.path = s.path[:len(s.path)-1]
		} else {
			i, err = s.skip(i)
		}
		if err != nil {
			return 0, err
		}
		i = s.ws(i)
		if i >= len(s.doc) {
			return 0, errSyntax
		}
		switch s.doc[i] {
		case ',':
			i = s.ws(i + 1)
		case '}':
			return i + 1, nil
		default:
			return 0, errSyntax
		}
	}
}

func (s *scanner) array(i int, ss []state, kept bool) (int, error) {
	i = s.ws(i + 1)
	if i < len(s.doc) && s.doc[i] == ']' {
		return i + 1, nil
	}
	def := s.c.def >= 0 && !kept
	d := len(s.path) + 1
	// Every element is reached by the same step: one set of states serves them all.
	next := s.c.advance(s.buf(d), ss, "", true, &s.set)
	s.bufs[d] = next // the elements' own members use bufs[d+1]
	for k := 0; ; k++ {
		var err error
		if len(next) > 0 || def {
			s.path = append(s.path, pathElem{index: k})
			i, err = s.walk(i, next, kept)
			s.path = s.path[:len(s.path)-1]
		} else {
			i, err = s.skip(i)
		}
		if err != nil {
			return 0, err
		}
		i = s.ws(i)
		if i >= len(s.doc) {
			return 0, errSyntax
		}
		switch s.doc[i] {
		case ',':
			i = s.ws(i + 1)
		case ']':
			return i + 1, nil
		default:
			return 0, errSyntax
		}
	}
}

// key returns the object key in the string token doc[start:end], unescaped.
func (s *scanner) key(start, end int) (string, error) {
	raw := s.doc[start:end]
	if !strings.Contains(string(raw), `\`) {
		return string(raw[1 : len(raw)-1]), nil
	}
	var k string
	if err := json.Unmarshal(raw, &k); err != nil {
		return "", errSyntax
	}
	return k, nil
}

func (s *scanner) ws(i int) int {
	for i < len(s.doc) {
		switch s.doc[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// skipString returns the end of the string token starting at i.
func (s *scanner) skipString(i int) (int, error) {
	for i++; i < len(s.doc); i++ {
		switch s.doc[i] {
		case '\\':
			i++
		case '"':
			return i + 1, nil
		}
	}
	return 0, errSyntax
}

// skip returns the end of the value starting at i, which must not be whitespace.
func (s *scanner) skip(i int) (int, error) {
	if i >= len(s.doc) {
		return 0, errSyntax
	}
	switch s.doc[i] {
	case '"':
		return s.skipString(i)
	case '{', '[':
		depth := 0
		for ; i < len(s.doc); i++ {
			switch s.doc[i] {
			case '"':
				end, err := s.skipString(i)
				if err != nil {
					return 0, err
				}
				i = end - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1, nil
				}
			}
		}
		return 0, errSyntax
	}
	start := i
	for i < len(s.doc) {
		switch s.doc[i] {
		case ',', '}', ']', ' ', '\t', '\n', '\r':
			if i == start {
				return 0, errSyntax
			}
			return i, nil
		}
		i++
	}
	if i == start {
		return 0, errSyntax
	}
	return i, nil
}

// splice returns doc with the value of every match replaced by repl[k]; every other byte
// is copied unchanged. ms must be in document order and not overlap.
func splice(doc []byte, ms []match, repl [][]byte) []byte {
	size := len(doc)
	for k, m := range ms {
		size += len(repl[k]) - (m.end - m.start)
	}
	out := make([]byte, 0, size)
	prev := 0
	for k, m := range ms {
		out = append(out, doc[prev:m.start]...)
		out = append(out, repl[k]...)
		prev = m.end
	}
	return append(out, doc[prev:]...)
}
