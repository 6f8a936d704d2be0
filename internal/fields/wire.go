package fields

import (
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/pubcrypt/pubcrypt/internal/envelope"
	"github.com/pubcrypt/pubcrypt/internal/wire"
)

// The pieces of the wire format (docs/FIELDS.md).
const (
	// ManifestKey is the metadata key of the field manifest.
	ManifestKey = "pubcrypt-fields"
	// MaxManifestLen is the longest manifest, in bytes: the limit of every envelope entry.
	MaxManifestLen = wire.MaxValueLen

	macLabel   = "pubcrypt-fields/v1\x00"
	fieldLabel = "pubcrypt-field/v1\x00"
	detContext = "pubcrypt-det/v1:"
	envPrefix  = "pc1e."

	manifestVersion = "v1"
	// manifestV2 is the version of a manifest whose rules use what version 1 cannot say:
	// a default, keep rules, wildcards (docs/FIELDS.md section 6). Everything else is v1's.
	manifestV2 = "v2"
	tagField   = ";t="

	idSize     = 16
	tagTextLen = 22 // base64url of wire.TagSize bytes
)

var b64 = base64.RawURLEncoding.Strict()

// nonceFor is the GCM nonce of sequence number seq, as FORMAT.md section 6.
func nonceFor(seq uint64) []byte {
	n := wire.Nonce(seq)
	return n[:]
}

// formatHeader builds the "pubcrypt" entry for data key keyID and first sequence number
// seq0: the envelope header of FORMAT.md section 4, without the m flag.
func formatHeader(keyID string, seq0 uint64) string {
	return wire.FormatHeader(keyID, wire.Nonce(seq0), false)
}

// parseHeader reads a "pubcrypt" entry of a field-protected message and returns the key
// ID and the first sequence number. It accepts exactly what formatHeader writes: the
// envelope header (wire.ParseHeader), and of those only the ones without m=1 (a
// field-protected message carries no sensitive metadata block) whose nonce is a
// sequence number.
func parseHeader(h string) (keyID string, seq0 uint64, err error) {
	keyID, nonce, sensitive, err := wire.ParseHeader(h)
	switch {
	case err != nil:
		return "", 0, fmt.Errorf("%w: %w", envelope.ErrMalformed, err)
	case sensitive:
		return "", 0, malformed("header: a field-protected message has no sensitive metadata block (m=1)")
	case binary.BigEndian.Uint32(nonce[:4]) != 0:
		return "", 0, malformed("header: nonce must start with 4 zero bytes")
	}
	return keyID, binary.BigEndian.Uint64(nonce[4:]), nil
}

// manifest is the parsed "pubcrypt-fields" entry.
type manifest struct {
	id         [idSize]byte
	transit    string // Vault key of transit fields, "" if none
	det        string // Vault key of deterministic fields, "" if none
	fpe        string // Vault key of FPE fields, "" if none
	fpeVersion int
	rules      Policy    // the rules that matched, in policy order, and the default
	c          *compiled // rules, compiled (received manifests only)
	unsigned   string    // the manifest up to ";t=": what the MAC covers
	tag        [wire.TagSize]byte
}

// setKeys names the keys of the modes the rules use, and only those.
func (m *manifest) setKeys(k Keys) {
	for _, r := range m.rules {
		switch r.Mode {
		case Transit:
			m.transit = k.Transit
		case Deterministic:
			m.det = k.Deterministic
		case FPE:
			m.fpe = k.FPE
		}
	}
}

func (m *manifest) idText() string { return b64.EncodeToString(m.id[:]) }

// version is "v2" if the rules use anything version 1 does not have, else "v1": a policy
// of version 1 gives the same manifest as before.
func (m *manifest) version() string {
	for _, r := range m.rules {
		if r.Path == DefaultPath || r.Mode == Keep || strings.Contains(r.Path, "*") {
			return manifestV2
		}
	}
	return manifestVersion
}

// formatUnsigned writes the manifest up to, not including, ";t=".
func (m *manifest) formatUnsigned() string {
	var b strings.Builder
	b.WriteString(m.version())
	b.WriteString(";id=")
	b.WriteString(m.idText())
	if m.transit != "" {
		b.WriteString(";tk=" + m.transit)
	}
	if m.det != "" {
		b.WriteString(";dk=" + m.det)
	}
	if m.fpe != "" {
		b.WriteString(";fk=" + m.fpe + "@" + strconv.Itoa(m.fpeVersion))
	}
	b.WriteString(";r=")
	n := 0
	def := ""
	for _, r := range m.rules {
		switch r.Path {
		case DefaultPath:
			def = r.code()
			continue
		case UnmatchedPath, SubjectPath: // the sender's business only
			continue
		}
		if n > 0 {
			b.WriteByte(',')
		}
		n++
		b.WriteString(r.Path + ":" + r.code())
	}
	if def != "" {
		b.WriteString(";d=" + def)
	}
	return b.String()
}

func (m *manifest) format() string {
	return m.unsigned + tagField + b64.EncodeToString(m.tag[:])
}

// parseManifest reads a manifest strictly: fields in order, each once, only the key
// fields the rules use, canonical encodings. It checks the rules as a policy too.
func parseManifest(s string, rc *ruleCache) (*manifest, error) {
	if len(s) > MaxManifestLen {
		return nil, badManifest("longer than %d bytes", MaxManifestLen)
	}
	if v, _, _ := strings.Cut(s, ";"); v != manifestVersion && v != manifestV2 {
		return nil, badManifest("unsupported version (want %q or %q)", manifestVersion, manifestV2)
	}
	i := strings.LastIndex(s, tagField)
	if i < 0 {
		return nil, badManifest("missing t= field")
	}
	m := &manifest{unsigned: s[:i]}
	// Exactly tagTextLen characters of the alphabet (DecodeFixed): the decoder skips '\r'
	// and '\n', and the MAC does not cover the tag's own text, so a newline put into it
	// would be a change that opens.
	if !wire.DecodeFixed(m.tag[:], s[i+len(tagField):]) {
		return nil, badManifest("t= must be %d bytes in base64url", wire.TagSize)
	}
	fields := strings.Split(m.unsigned, ";")[1:]
	next := func(name string) (string, bool) {
		if len(fields) > 0 && strings.HasPrefix(fields[0], name+"=") {
			v := fields[0][len(name)+1:]
			fields = fields[1:]
			return v, true
		}
		return "", false
	}
	if id, ok := next("id"); !ok || !wire.DecodeFixed(m.id[:], id) {
		return nil, badManifest("id= must be %d bytes in base64url", idSize)
	}
	if v, ok := next("tk"); ok {
		if !wire.ValidKeyID(v) {
			return nil, badManifest("tk= is not a valid key name")
		}
		m.transit = v
	}
	if v, ok := next("dk"); ok {
		if !wire.ValidKeyID(v) {
			return nil, badManifest("dk= is not a valid key name")
		}
		m.det = v
	}
	if v, ok := next("fk"); ok {
		name, ver, _ := strings.Cut(v, "@")
		n, err := strconv.Atoi(ver)
		if !wire.ValidKeyID(name) || err != nil || n <= 0 || n > math.MaxInt32 || strconv.Itoa(n) != ver {
			return nil, badManifest("fk= must be key@version")
		}
		m.fpe, m.fpeVersion = name, n
	}
	rules, ok := next("r")
	def, hasDef := next("d")
	if !ok || len(fields) != 0 {
		return nil, badManifest("want fields v1;id=;[tk=;][dk=;][fk=;]r=;t= or v2;id=;[tk=;][dk=;][fk=;]r=;[d=;]t= in this order")
	}
	if hasDef {
		rules += ";d=" + def // the cache key: rules and default together
	}
	if m.c = rc.get(rules); m.c == nil {
		var p Policy
		list, _, _ := strings.Cut(rules, ";")
		if list != "" {
			for text := range strings.SplitSeq(list, ",") {
				r, err := parseRuleCode(text)
				if err != nil {
					return nil, err
				}
				p = append(p, r)
			}
		}
		if hasDef {
			switch def {
			case "t":
				p = append(p, Rule{Path: DefaultPath, Mode: Transit})
			case "e":
				p = append(p, Rule{Path: DefaultPath, Mode: Envelope})
			default:
				return nil, badManifest("d= must be t or e")
			}
		}
		c, err := compile(p)
		if err != nil {
			return nil, badManifest("rules: %v", err)
		}
		m.c = c
		rc.put(rules, c)
	}
	m.rules = m.c.rules
	for _, use := range []struct {
		mode Mode
		key  string
		name string
	}{{Transit, m.transit, "tk"}, {Deterministic, m.det, "dk"}, {FPE, m.fpe, "fk"}} {
		used := slices.ContainsFunc(m.rules, func(r Rule) bool { return r.Mode == use.mode })
		if used != (use.key != "") {
			return nil, badManifest("%s= must be present exactly when a rule uses %s", use.name, use.mode)
		}
	}
	if m.formatUnsigned() != m.unsigned {
		return nil, badManifest("not in canonical form")
	}
	return m, nil
}

// ruleCache keeps the compiled rules of received manifests by their text: a producer
// sends the same few rule lists over and over. A nil *ruleCache caches nothing.
type ruleCache struct {
	mu sync.Mutex
	m  map[string]*compiled
}

const ruleCacheSize = 256

func (rc *ruleCache) get(rules string) *compiled {
	if rc == nil {
		return nil
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.m[rules]
}

func (rc *ruleCache) put(rules string, c *compiled) {
	if rc == nil {
		return
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if rc.m == nil {
		rc.m = make(map[string]*compiled)
	}
	if len(rc.m) >= ruleCacheSize {
		clear(rc.m)
	}
	rc.m[rules] = c
}

func parseRuleCode(text string) (Rule, error) {
	path, code, ok := strings.Cut(text, ":")
	if !ok || code == "" {
		return Rule{}, badManifest("rule must be path:mode")
	}
	r := Rule{Path: path}
	if spec, ok := strings.CutPrefix(code, "x("); ok {
		// x(ROLE) or x(ROLE/TRANSFORMATION): the names are checked by compile.
		spec, ok = strings.CutSuffix(spec, ")")
		role, tr, hasTr := strings.Cut(spec, "/")
		if !ok || role == "" || hasTr && tr == "" {
			return Rule{}, badManifest("rule %q: want x(role) or x(role/transformation)", path)
		}
		r.Mode, r.Role, r.Transformation = Transform, role, tr
		return r, nil
	}
	switch code[0] {
	case 't':
		r.Mode = Transit
	case 'e':
		r.Mode = Envelope
	case 'd':
		r.Mode = Deterministic
	case 'f':
		r.Mode = FPE
	case 'k':
		r.Mode = Keep
	default:
		return Rule{}, badManifest("rule %q: unknown mode", path)
	}
	for _, c := range code[1:] {
		var flag *bool
		switch c {
		case 'b':
			flag = &r.KeepBIN
		case 'l':
			flag = &r.KeepLast4
		case 'c':
			flag = &r.Luhn
		case 'v':
			flag = &r.InVault
		default:
			return Rule{}, badManifest("rule %q: unknown option", path)
		}
		if *flag {
			return Rule{}, badManifest("rule %q: option repeated", path)
		}
		*flag = true
	}
	// Order and applicability are checked by compile and the canonical-form comparison.
	return r, nil
}

// macAD builds the associated data of the message MAC: the label, the envelope header,
// the wrapped data key, the manifest without its tag, the clear metadata (sorted keys)
// and the body, each length-prefixed. keys are the clear metadata keys, sorted.
func macAD(header, dek, unsigned string, keys []string, md map[string]string, body []byte) []byte {
	size := len(macLabel) + 4 + len(header) + 4 + len(dek) + 4 + len(unsigned) + 4 + 4 + len(body)
	for _, k := range keys {
		size += 8 + len(k) + len(md[k])
	}
	ad := make([]byte, 0, size)
	ad = append(ad, macLabel...)
	ad = wire.AppendString(ad, header)
	ad = wire.AppendString(ad, dek)
	ad = wire.AppendString(ad, unsigned)
	ad = binary.BigEndian.AppendUint32(ad, uint32(len(keys)))
	for _, k := range keys {
		ad = wire.AppendString(ad, k)
		ad = wire.AppendString(ad, md[k])
	}
	return wire.AppendString(ad, body)
}

// fieldAD is the associated data of a transit or envelope field: it binds the value to
// its message and its concrete path.
func fieldAD(id []byte, path string) []byte {
	ad := make([]byte, 0, len(fieldLabel)+8+len(id)+len(path))
	ad = append(ad, fieldLabel...)
	ad = wire.AppendString(ad, id)
	return wire.AppendString(ad, path)
}

// clearKeys returns the keys of md other than the three reserved entries, sorted.
func clearKeys(md map[string]string) []string {
	keys := make([]string, 0, len(md))
	for k := range md {
		if k != envelope.HeaderKey && k != envelope.DEKKey && k != ManifestKey {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	return keys
}

// plainString reports whether s can be written inside a JSON string as is: printable
// ASCII without '"' or '\'. Every replacement the format writes is such a string.
func plainString(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

// quoted returns s as a JSON string; s must be plainString.
func quoted(s string) []byte {
	b := make([]byte, 0, len(s)+2)
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// unquotePlain returns the content of a JSON string token written by quoted, or false.
func unquotePlain(raw []byte) (string, bool) {
	if len(raw) < 2 || raw[0] != '"' || raw[len(raw)-1] != '"' {
		return "", false
	}
	s := string(raw[1 : len(raw)-1])
	return s, plainString(s)
}

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{envelope.ErrMalformed}, args...)...)
}

func badManifest(format string, args ...any) error {
	return fmt.Errorf("%w: %w: "+format, append([]any{ErrManifest, envelope.ErrMalformed}, args...)...)
}
