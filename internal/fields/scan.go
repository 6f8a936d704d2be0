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

// locate returns the values the policy selects in doc, in document order. doc must be
// valid JSON (json.Valid). Object keys are compared after JSON unescaping, byte for byte.
// A key that occurs twice in one object is matched both times. Only the parts of the
// document the policy's paths lead into are looked at closely; the rest is skipped.
func locate(doc []byte, c *compiled) ([]match, error) {
	s := &scanner{doc: doc}
	i := s.ws(0)
	end, err := s.walk(i, c.root)
	if err != nil {
		return nil, err
	}
	if s.ws(end) != len(doc) {
		return nil, errSyntax
	}
	return s.found, nil
}

type scanner struct {
	doc   []byte
	path  []pathElem // where the walk is
	found []match
}

type pathElem struct {
	key   string
	index int // -1 for a key
}

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
		b.WriteString(e.key)
	}
	return b.String()
}

// walk reads the value at i under trie node n and returns where it ends.
func (s *scanner) walk(i int, n *node) (int, error) {
	if i >= len(s.doc) {
		return 0, errSyntax
	}
	if n.rule >= 0 {
		end, err := s.skip(i)
		if err != nil {
			return 0, err
		}
		s.found = append(s.found, match{start: i, end: end, rule: n.rule, path: s.concretePath()})
		return end, nil
	}
	switch s.doc[i] {
	case '{':
		if len(n.keys) > 0 {
			return s.object(i, n)
		}
	case '[':
		if n.elem != nil {
			return s.array(i, n.elem)
		}
	}
	return s.skip(i)
}

func (s *scanner) object(i int, n *node) (int, error) {
	i = s.ws(i + 1)
	if i < len(s.doc) && s.doc[i] == '}' {
		return i + 1, nil
	}
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
		if child := n.keys[key]; child != nil {
			s.path = append(s.path, pathElem{key: key, index: -1})
			i, err = s.walk(i, child)
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

func (s *scanner) array(i int, elem *node) (int, error) {
	i = s.ws(i + 1)
	if i < len(s.doc) && s.doc[i] == ']' {
		return i + 1, nil
	}
	for k := 0; ; k++ {
		s.path = append(s.path, pathElem{index: k})
		var err error
		i, err = s.walk(i, elem)
		s.path = s.path[:len(s.path)-1]
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
