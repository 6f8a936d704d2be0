package fields

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/pubcrypt/pubcrypt/internal/fpe"
	"github.com/pubcrypt/pubcrypt/internal/wire"
	"github.com/pubcrypt/pubcrypt/keyring"
)

// Mode is how one field is protected.
type Mode byte

// The modes. The zero Mode is invalid, so a Rule must name one.
const (
	// Transit encrypts the value with Vault Transit (randomized), bound to the message
	// and to the field's position in it.
	Transit Mode = iota + 1
	// Envelope encrypts the value locally with AES-256-GCM under the message's data key:
	// no key-service call per message.
	Envelope
	// Deterministic encrypts the value with a convergent Vault Transit key: equal values
	// under one rule give equal ciphertexts, so they can be joined and counted.
	Deterministic
	// FPE enciphers a string of digits into digits of the same shape (FF1); also
	// deterministic.
	FPE
	// Transform encodes a string with a role of Vault Enterprise's Transform engine
	// (format-preserving encryption, masking, tokenization, as the role's transformation
	// says); the replacement is the string Vault returns. The key service must implement
	// keyring.Transformer.
	Transform
	// Keep leaves the values at the rule's path readable: the policy's default does not
	// apply to them or inside them. A rule that protects still does (docs/FIELDS.md
	// section 4.4). Only in a policy with a default.
	Keep
)

// The reserved paths of the two policy options, which are rules of a Policy so that a
// Policy stays a list of rules. Neither is a path of the grammar (section 4.1), so they
// name no JSON member.
const (
	// DefaultPath is the path of a policy's default: Rule{Path: DefaultPath, Mode: Envelope}
	// ("default=envelope") protects every scalar value that no other rule selects or
	// keeps, so that a field nobody named is protected too. Transit or Envelope only.
	DefaultPath = "@default"
	// UnmatchedPath is the path of the option that says what to do with a JSON body whose
	// top-level value is not an object ("unmatched=refuse"): Rule{Path: UnmatchedPath,
	// Unmatched: UnmatchedRefuse}. Without it, such a body is encrypted whole.
	UnmatchedPath = "@unmatched"
	// SubjectPath is the path of the option that names the subject of a message
	// ("subject=customer_id", "subject=metadata:customer"): Rule{Path: SubjectPath,
	// Subject: "customer_id"}. With it, every protected value of a message is encrypted
	// under a key of that subject alone, which Subjects.Forget can destroy
	// (docs/FIELDS.md section 12).
	SubjectPath = "@subject"
)

// SubjectMetadataPrefix starts a subject that names a metadata entry rather than a JSON
// path: "metadata:customer".
const SubjectMetadataPrefix = "metadata:"

// SubjectKeyOption starts a subject that names the subject's key itself
// ("key:pubcrypt-subject-..."), for sending again a message that was decrypted, whose
// subject ID is known only by its key (package reencrypt).
const SubjectKeyOption = "key:"

// Unmatched is what a policy does with a body it cannot address: a JSON document whose
// top-level value is an array, a string, a number, true, false or null (docs/FIELDS.md
// section 4.5). The zero value is the safe one.
type Unmatched byte

const (
	// UnmatchedBody encrypts the whole body (docs/FORMAT.md) instead of its fields.
	UnmatchedBody Unmatched = iota
	// UnmatchedRefuse refuses the message: ErrUnmatched, class fault.Message.
	UnmatchedRefuse
	// UnmatchedClear sends the body readable, authenticated by the message MAC, with no
	// field protected: only when the user says so.
	UnmatchedClear
)

func (u Unmatched) String() string {
	switch u {
	case UnmatchedBody:
		return "body"
	case UnmatchedRefuse:
		return "refuse"
	case UnmatchedClear:
		return "clear"
	}
	return fmt.Sprintf("Unmatched(%d)", byte(u))
}

func unmatchedOf(name string) (Unmatched, bool) {
	for u := UnmatchedBody; u <= UnmatchedClear; u++ {
		if u.String() == name {
			return u, true
		}
	}
	return 0, false
}

// String returns the mode's name in the policy grammar.
func (m Mode) String() string {
	switch m {
	case Transit:
		return "transit"
	case Envelope:
		return "envelope"
	case Deterministic:
		return "deterministic"
	case FPE:
		return "fpe"
	case Transform:
		return "transform"
	case Keep:
		return "keep"
	}
	return fmt.Sprintf("Mode(%d)", byte(m))
}

// code is the mode's letter in the manifest.
func (m Mode) code() byte {
	switch m {
	case Transit:
		return 't'
	case Envelope:
		return 'e'
	case Deterministic:
		return 'd'
	case FPE:
		return 'f'
	case Transform:
		return 'x'
	case Keep:
		return 'k'
	}
	return 0
}

func modeOf(name string) (Mode, bool) {
	for m := Transit; m <= Keep; m++ {
		if m.String() == name {
			return m, true
		}
	}
	return 0, false
}

// Rule protects the values at one path.
type Rule struct {
	// Path names the values: keys separated by ".", "[]" after a key for every element
	// of the array there ("items[].sku"). Key characters are [A-Za-z0-9_-].
	Path string
	// Mode is how the values are protected.
	Mode Mode
	// KeepBIN, KeepLast4 and Luhn are FPE options for card numbers: keep the first 6
	// digits, keep the last 4, make the output pass the Luhn check (the input must).
	// Any of them makes FPE use the card construction (fpe.EncryptCard); none, the plain
	// digit one (fpe.EncryptDigits).
	KeepBIN, KeepLast4, Luhn bool
	// InVault is the FPE option vault: the key service enciphers the value itself
	// (keyring.FPECipher; with Vault, pubcrypt's plugin vaultplugin/fpe), so the FF1 key
	// never reaches this process and a producer allowed only to encode cannot decode.
	// Without it the FF1 key is derived in Vault and used here, by producers and
	// consumers alike.
	InVault bool
	// Role and Transformation name the Vault Transform role of a Transform rule (required)
	// and its transformation (empty: the role's only one); [A-Za-z0-9._-], 1-128 bytes.
	Role, Transformation string
	// Unmatched is the choice of the rule of path UnmatchedPath, and of no other.
	Unmatched Unmatched
	// Subject is where the rule of path SubjectPath, and no other, finds the subject ID:
	// a path without wildcards or arrays whose value is a JSON string or number
	// ("customer.id"), or "metadata:" and a metadata key ("metadata:customer").
	Subject string
}

func (r Rule) card() bool { return r.KeepBIN || r.KeepLast4 || r.Luhn }

func (r Rule) cardOptions() fpe.CardOptions {
	return fpe.CardOptions{KeepBIN: r.KeepBIN, KeepLast4: r.KeepLast4, Luhn: r.Luhn}
}

// String returns the rule in the policy grammar: "card_number=fpe(bin,luhn)",
// "ssn=transform(pii/ssn-fpe)".
func (r Rule) String() string {
	switch r.Path {
	case DefaultPath:
		return "default=" + r.Mode.String()
	case UnmatchedPath:
		return "unmatched=" + r.Unmatched.String()
	case SubjectPath:
		return "subject=" + r.Subject
	}
	s := r.Path + "=" + r.Mode.String()
	if r.Mode == Transform {
		return s + "(" + r.transformSpec() + ")"
	}
	if r.card() || r.InVault {
		var opts []string
		if r.KeepBIN {
			opts = append(opts, "bin")
		}
		if r.KeepLast4 {
			opts = append(opts, "last4")
		}
		if r.Luhn {
			opts = append(opts, "luhn")
		}
		if r.InVault {
			opts = append(opts, "vault")
		}
		s += "(" + strings.Join(opts, ",") + ")"
	}
	return s
}

// transformSpec is ROLE or ROLE/TRANSFORMATION.
func (r Rule) transformSpec() string {
	if r.Transformation != "" {
		return r.Role + "/" + r.Transformation
	}
	return r.Role
}

// code is the rule's mode and options in the manifest: "t", "e", "d", "f", "fbc", ...,
// "x(ROLE)", "x(ROLE/TRANSFORMATION)".
func (r Rule) code() string {
	if r.Mode == Transform {
		return "x(" + r.transformSpec() + ")"
	}
	b := []byte{r.Mode.code()}
	if r.KeepBIN {
		b = append(b, 'b')
	}
	if r.KeepLast4 {
		b = append(b, 'l')
	}
	if r.Luhn {
		b = append(b, 'c')
	}
	if r.InVault {
		b = append(b, 'v')
	}
	return string(b)
}

// Policy says which fields of a JSON message a producer protects, and how.
type Policy []Rule

// String returns the policy in the grammar ParsePolicy reads, rules in their order; FPE
// options come out in the order bin, last4, luhn, vault. The options default= and
// unmatched= are clauses of their own (";"); keep rules are written path=keep.
func (p Policy) String() string {
	var b strings.Builder
	inList := false
	for i, r := range p {
		opt := r.option()
		if i > 0 {
			if opt || !inList {
				b.WriteByte(';')
			} else {
				b.WriteByte(',')
			}
		}
		b.WriteString(r.String())
		inList = !opt
	}
	return b.String()
}

// option reports whether r is one of the policy options rather than a path rule.
func (r Rule) option() bool {
	return r.Path == DefaultPath || r.Path == UnmatchedPath || r.Path == SubjectPath
}

// Subject returns the policy's subject option, if it has one.
func (p Policy) Subject() (Rule, bool) {
	for _, r := range p {
		if r.Path == SubjectPath {
			return r, true
		}
	}
	return Rule{}, false
}

// Default returns the policy's default rule, if it has one.
func (p Policy) Default() (Rule, bool) {
	for _, r := range p {
		if r.Path == DefaultPath {
			return r, true
		}
	}
	return Rule{}, false
}

// OnUnmatched returns what p does with a body whose top-level value is not an object.
func (p Policy) OnUnmatched() Unmatched {
	for _, r := range p {
		if r.Path == UnmatchedPath {
			return r.Unmatched
		}
	}
	return UnmatchedBody
}

// Unmatched reports whether body is a JSON document that p cannot address, its top-level
// value not being an object, and if so what p does with it. A body that is not JSON at
// all is not unmatched: Protect refuses it (ErrNotJSON). Callers route an unmatched body
// before Protect, which refuses one unless p says UnmatchedClear.
func (p Policy) Unmatched(body []byte) (Unmatched, bool) {
	if !unaddressable(body) {
		return 0, false
	}
	return p.OnUnmatched(), true
}

// unaddressable: a JSON document whose top-level value is not an object.
func unaddressable(body []byte) bool {
	for _, c := range body {
		if c == ' ' || c == '\t' || c == '\n' || c == '\r' {
			continue
		}
		if c == '{' {
			return false
		}
		break
	}
	return json.Valid(body)
}

// Validate reports whether p can be used: valid paths and modes, options only with FPE,
// no path twice, no literal path inside another (a value is protected whole or not at
// all), at most one default (transit or envelope) and one unmatched option, keep rules
// only with a default, and no two protecting rules of one rank that can select the same
// value (docs/FIELDS.md section 4.4).
func (p Policy) Validate() error {
	_, err := compile(p)
	return err
}

// ParsePolicy reads a policy such as
//
//	name=transit, card_number=fpe(bin,luhn), items[].sku=envelope
//
// or, deny by default,
//
//	default=envelope; keep=order_id,created_at,items[].sku; **.card_number=fpe(bin,luhn)
//
// Rules are separated by commas; each is path=mode, mode one of transit, envelope,
// deterministic, fpe, transform, keep; fpe may take options in parentheses: bin, last4,
// luhn, and vault (the key service runs FF1, Rule.InVault); transform needs the Vault
// Transform role, and optionally its transformation, in parentheses: transform(ROLE) or
// transform(ROLE/TRANSFORMATION). Paths may use the wildcards "*" (any member) and "**"
// (any depth). Clauses are separated by semicolons: a list of rules,
// default=transit|envelope, keep=PATH,PATH,... (rules of mode keep) or
// unmatched=body|refuse|clear, or subject=PATH|metadata:KEY (Rule.Subject). Spaces and tabs around the parts are ignored. The empty
// string is the empty policy. docs/FIELDS.md gives the grammar (section 4).
func ParsePolicy(s string) (Policy, error) {
	if strings.Trim(s, blanks) == "" {
		return nil, nil
	}
	var p Policy
	n := 0 // rules counted across clauses, for errors
	for k, clause := range strings.Split(s, ";") {
		key, val, _ := strings.Cut(clause, "=")
		val = strings.Trim(val, blanks)
		switch strings.Trim(key, blanks) {
		case "default":
			m, ok := modeOf(val)
			if !ok || (m != Transit && m != Envelope) {
				return nil, fmt.Errorf("%w: clause %d: default=%q: want default=transit or default=envelope", ErrPolicy, k+1, val)
			}
			p = append(p, Rule{Path: DefaultPath, Mode: m})
		case "keep":
			for path := range strings.SplitSeq(val, ",") {
				if path = strings.Trim(path, blanks); path == "" {
					return nil, fmt.Errorf("%w: clause %d: keep= wants paths separated by commas", ErrPolicy, k+1)
				}
				p = append(p, Rule{Path: path, Mode: Keep})
			}
		case "unmatched":
			u, ok := unmatchedOf(val)
			if !ok {
				return nil, fmt.Errorf("%w: clause %d: unmatched=%q: want body, refuse or clear", ErrPolicy, k+1, val)
			}
			p = append(p, Rule{Path: UnmatchedPath, Unmatched: u})
		case "subject":
			if !isModeText(val) {
				p = append(p, Rule{Path: SubjectPath, Subject: val})
				continue
			}
			// "subject=transit": a rule for a field named subject (an email's, say).
			fallthrough
		default:
			for _, text := range splitTop(clause) {
				n++
				r, err := parseRule(text)
				if err != nil {
					return nil, fmt.Errorf("%w: rule %d: %w", ErrPolicy, n, err)
				}
				if reservedWord(r.Path) {
					return nil, fmt.Errorf("%w: rule %d: %q is an option of the text form, not a path here: write it as a clause of its own, separated by \";\"", ErrPolicy, n, r.Path)
				}
				p = append(p, r)
			}
		}
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return p, nil
}

// reservedWord: the option names of the text form, which a rule list cannot use as a path.
func reservedWord(path string) bool {
	return path == "default" || path == "keep" || path == "unmatched"
}

// isModeText reports whether v reads as a mode with its options ("transit",
// "fpe(bin,luhn)"): a clause subject=v is then a rule for a field named subject, not the
// subject option.
func isModeText(v string) bool {
	name, _, _ := strings.Cut(splitTop(v)[0], "(")
	_, ok := modeOf(strings.Trim(name, blanks))
	return ok
}

// splitTop splits s at commas outside parentheses.
func splitTop(s string) []string {
	var parts []string
	depth, start := 0, 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '(':
			depth++
		case ')':
			depth--
		case ',':
			if depth == 0 {
				parts = append(parts, s[start:i])
				start = i + 1
			}
		}
	}
	return append(parts, s[start:])
}

const blanks = " \t"

func parseRule(text string) (Rule, error) {
	if strings.Trim(text, blanks) == "" {
		return Rule{}, fmt.Errorf("empty rule (stray comma?)")
	}
	path, mode, ok := strings.Cut(text, "=")
	if !ok {
		return Rule{}, fmt.Errorf("%q: want path=mode", strings.Trim(text, blanks))
	}
	r := Rule{Path: strings.Trim(path, blanks)}
	mode = strings.Trim(mode, blanks)
	name, opts, hasOpts := strings.Cut(mode, "(")
	name = strings.Trim(name, blanks)
	m, ok := modeOf(name)
	if !ok {
		return Rule{}, fmt.Errorf("path %q: unknown mode %q (want transit, envelope, deterministic, fpe or transform)", r.Path, name)
	}
	r.Mode = m
	if m == Transform {
		body, ok := strings.CutSuffix(opts, ")")
		if !hasOpts || !ok || strings.ContainsAny(body, "()") {
			return Rule{}, fmt.Errorf("path %q: want transform(ROLE) or transform(ROLE/TRANSFORMATION)", r.Path)
		}
		role, tr, hasTr := strings.Cut(body, "/")
		r.Role, r.Transformation = strings.Trim(role, blanks), strings.Trim(tr, blanks)
		if r.Role == "" || hasTr && r.Transformation == "" {
			return Rule{}, fmt.Errorf("path %q: want transform(ROLE) or transform(ROLE/TRANSFORMATION)", r.Path)
		}
		return r, nil
	}
	if hasOpts {
		if m != FPE {
			return Rule{}, fmt.Errorf("path %q: mode %s takes no options", r.Path, m)
		}
		body, ok := strings.CutSuffix(opts, ")")
		if !ok || strings.ContainsAny(body, "()") {
			return Rule{}, fmt.Errorf("path %q: want fpe(option,...)", r.Path)
		}
		for _, o := range strings.Split(body, ",") {
			var flag *bool
			switch o = strings.Trim(o, blanks); o {
			case "bin":
				flag = &r.KeepBIN
			case "last4":
				flag = &r.KeepLast4
			case "luhn":
				flag = &r.Luhn
			case "vault":
				flag = &r.InVault
			default:
				return Rule{}, fmt.Errorf("path %q: unknown fpe option %q (want bin, last4, luhn or vault)", r.Path, o)
			}
			if *flag {
				return Rule{}, fmt.Errorf("path %q: fpe option %q given twice", r.Path, o)
			}
			*flag = true
		}
	}
	return r, nil
}

// maxPathLen bounds a rule path: it must fit the FPE card tweak (fpe.MaxTweakLen less
// the card's 12 bytes) and leave room in the 1024-byte manifest.
const maxPathLen = 200

// stepKind is what one step of a path matches.
type stepKind byte

const (
	stepName stepKind = iota // the members of one name
	stepAny                  // "*": every member
	stepElem                 // "[]": every element of an array
	stepDeep                 // "**": zero or more steps of any kind
)

// step is one step of a parsed path.
type step struct {
	kind stepKind
	key  string // stepName only
}

// parsePath reads path = segment *("." segment), segment = (name / "*") *("[]") / "**",
// name = 1*[A-Za-z0-9_-]; "**" is never last and never twice in a row.
func parsePath(p string) ([]step, error) {
	if p == "" {
		return nil, fmt.Errorf("empty path")
	}
	if len(p) > maxPathLen {
		return nil, fmt.Errorf("path %.40q...: longer than %d bytes", p, maxPathLen)
	}
	var steps []step
	segs := strings.Split(p, ".")
	for k, seg := range segs {
		if seg == "**" {
			if k == len(segs)-1 {
				return nil, fmt.Errorf("path %q: \"**\" must be followed by a key (for every value, use default=)", p)
			}
			if len(steps) > 0 && steps[len(steps)-1].kind == stepDeep {
				return nil, fmt.Errorf("path %q: \"**.**\" is \"**\"", p)
			}
			steps = append(steps, step{kind: stepDeep})
			continue
		}
		name := strings.TrimRight(seg, "[]")
		switch {
		case name == "":
			return nil, fmt.Errorf("path %q: empty key", p)
		case name == "*":
			steps = append(steps, step{kind: stepAny})
		default:
			for i := 0; i < len(name); i++ {
				if !nameChar(name[i]) {
					return nil, fmt.Errorf("path %q: character %q not allowed in a key (want [A-Za-z0-9_-], \".\" between keys, \"[]\" after one, \"*\" or \"**\" as a whole key)", p, name[i])
				}
			}
			steps = append(steps, step{kind: stepName, key: name})
		}
		for rest := seg[len(name):]; rest != ""; rest = rest[2:] {
			if !strings.HasPrefix(rest, "[]") {
				return nil, fmt.Errorf("path %q: want \"[]\" after key %q", p, name)
			}
			steps = append(steps, step{kind: stepElem})
		}
	}
	return steps, nil
}

func nameChar(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-'
}

// pattern is one path rule (a protecting rule or a keep rule), compiled.
type pattern struct {
	rule  int // index in the policy
	steps []step
	keep  bool
	// deep and any count the "**" and "*" steps: the rank of section 4.4, lower is more
	// specific. A path without either is literal.
	deep, any int
}

func (pt *pattern) literal() bool { return pt.deep == 0 && pt.any == 0 }

// moreSpecific reports whether a wins over b where both select one value.
func (a *pattern) moreSpecific(b *pattern) bool {
	if a.deep != b.deep {
		return a.deep < b.deep
	}
	if a.any != b.any {
		return a.any < b.any
	}
	return a.rule < b.rule // two rules of one rank never select one value (compile)
}

// state is a position in a pattern while a document is walked: steps[:pos] matched.
type state struct{ pat, pos int }

// compiled is a validated policy ready to locate values.
type compiled struct {
	rules     Policy
	subject   *subjectSource // nil without a subject option
	pats      []pattern
	def       int // index in rules of the default, -1 if none
	unmatched Unmatched
	start     []state // the states at the top-level value
	// offs[k] numbers the states of pattern k from offs[k] on (one per position, its end
	// included), so that a walk can mark the states it has in a flat array: with many
	// "**" rules a value can have hundreds of states, and looking each up in the list
	// made every step quadratic in them.
	offs    []int
	nstates int
}

// stateSet collects the states of one value without duplicates, in O(1) per state.
type stateSet struct {
	mark  []uint32 // mark[id] == stamp: the state is in the current set
	stamp uint32
}

// reset starts a new, empty set.
func (m *stateSet) reset(n int) {
	if len(m.mark) < n {
		m.mark = make([]uint32, n)
	}
	m.stamp++
	if m.stamp == 0 { // wrapped: old marks could collide
		clear(m.mark)
		m.stamp = 1
	}
}

func compile(p Policy) (*compiled, error) {
	if r, ok := p.Subject(); ok && !strings.HasPrefix(r.Subject, SubjectMetadataPrefix) && !strings.HasPrefix(r.Subject, SubjectKeyOption) && !slices.ContainsFunc(p, func(o Rule) bool { return o.Path == r.Subject }) {
		// The subject ID is the subject's data too: protected under its key unless a
		// rule says otherwise (docs/FIELDS.md section 12.1).
		p = append(slices.Clip(p), Rule{Path: r.Subject, Mode: Envelope})
	}
	c := &compiled{rules: p, def: -1}
	hasUnmatched, hasKeep := false, false
	firstFPE := -1
	for i, r := range p {
		switch r.Path {
		case DefaultPath:
			switch {
			case c.def >= 0:
				return nil, fmt.Errorf("%w: default given twice", ErrPolicy)
			case r.Mode != Transit && r.Mode != Envelope:
				return nil, fmt.Errorf("%w: the default must be transit or envelope, not %s (deterministic would make equal values of different fields equal; fpe and transform fit few values)", ErrPolicy, r.Mode)
			case r.card() || r.Role != "" || r.Transformation != "" || r.Unmatched != 0:
				return nil, fmt.Errorf("%w: the default takes no options", ErrPolicy)
			}
			c.def = i
			continue
		case UnmatchedPath:
			switch {
			case hasUnmatched:
				return nil, fmt.Errorf("%w: unmatched given twice", ErrPolicy)
			case r.Unmatched > UnmatchedClear:
				return nil, fmt.Errorf("%w: invalid unmatched choice %d", ErrPolicy, byte(r.Unmatched))
			case r.Mode != 0 || r.card() || r.Role != "" || r.Transformation != "":
				return nil, fmt.Errorf("%w: unmatched takes no mode", ErrPolicy)
			}
			hasUnmatched, c.unmatched = true, r.Unmatched
			continue
		case SubjectPath:
			switch {
			case c.subject != nil:
				return nil, fmt.Errorf("%w: subject given twice", ErrPolicy)
			case r.Mode != 0 || r.card() || r.InVault || r.Role != "" || r.Transformation != "" || r.Unmatched != 0:
				return nil, fmt.Errorf("%w: subject takes no mode", ErrPolicy)
			}
			src, err := parseSubject(r.Subject)
			if err != nil {
				return nil, fmt.Errorf("%w: %w", ErrPolicy, err)
			}
			c.subject = src
			continue
		}
		if r.Subject != "" {
			return nil, fmt.Errorf("%w: rule %q: only the subject option names a subject", ErrPolicy, r.Path)
		}
		if err := checkRule(r); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrPolicy, err)
		}
		if r.Mode == FPE {
			// The manifest names one FPE key and version (fk=) for the message: the FF1
			// runs either here or in the key service, not both.
			if firstFPE < 0 {
				firstFPE = i
			} else if p[firstFPE].InVault != r.InVault {
				return nil, fmt.Errorf("%w: paths %q and %q: fpe rules of one policy are all fpe(vault) or none", ErrPolicy, p[firstFPE].Path, r.Path)
			}
		}
		steps, err := parsePath(r.Path)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrPolicy, err)
		}
		pt := pattern{rule: i, steps: steps, keep: r.Mode == Keep}
		for _, s := range steps {
			switch s.kind {
			case stepDeep:
				pt.deep++
			case stepAny:
				pt.any++
			}
		}
		for k := range c.pats {
			if err := conflict(p, &c.pats[k], &pt); err != nil {
				return nil, fmt.Errorf("%w: %w", ErrPolicy, err)
			}
		}
		hasKeep = hasKeep || pt.keep
		c.pats = append(c.pats, pt)
	}
	if c.subject != nil {
		for _, r := range p {
			if r.Mode == Deterministic || r.Mode == Transform || r.InVault {
				return nil, fmt.Errorf("%w: rule %q: with a subject, every protected value is encrypted under the subject's own key so that forgetting the subject erases it, and mode %s uses a key shared by every subject: use transit, envelope or fpe without vault", ErrPolicy, r.Path, r.code())
			}
		}
	}
	if hasKeep && c.def < 0 {
		return nil, fmt.Errorf("%w: keep rules need a default (default=envelope or default=transit): without one, a policy keeps everything it does not name", ErrPolicy)
	}
	c.offs = make([]int, len(c.pats))
	for k := range c.pats {
		c.offs[k] = c.nstates
		c.nstates += len(c.pats[k].steps) + 1
	}
	var set stateSet
	set.reset(c.nstates)
	for k := range c.pats {
		c.start = c.add(c.start, state{pat: k}, &set)
	}
	return c, nil
}

// conflict applies section 4.4 to two path rules, old before new in the policy: two
// literal paths must not be equal or one inside the other (as in version 1); two
// protecting rules of the same rank, one of them with a wildcard, must not be able to
// select the same value. Everything else is decided value by value, by precedence.
func conflict(p Policy, old, new *pattern) error {
	op, np := p[old.rule].Path, p[new.rule].Path
	if op == np {
		return fmt.Errorf("path %q appears twice", np)
	}
	if old.literal() && new.literal() {
		switch {
		case isPrefix(old.steps, new.steps):
			return fmt.Errorf("path %q lies inside %q, which is protected or kept whole", np, op)
		case isPrefix(new.steps, old.steps):
			return fmt.Errorf("path %q contains another rule's path; a value is protected or kept whole", np)
		}
		return nil
	}
	if !old.keep && !new.keep && old.deep == new.deep && old.any == new.any && intersect(old.steps, new.steps) {
		return fmt.Errorf("rules %q and %q can select the same value and neither is more specific (add a literal path for it, or narrow one of them)", op, np)
	}
	return nil
}

// isPrefix reports whether the literal path a is b or a prefix of it, in steps.
func isPrefix(a, b []step) bool {
	if len(a) > len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// intersect reports whether some concrete path matches both a and b. Any concrete path
// occurs in some document, so this is exactly "can select the same value".
func intersect(a, b []step) bool {
	memo := map[[2]int]bool{}
	var f func(i, j int) bool
	f = func(i, j int) bool {
		k := [2]int{i, j}
		if v, ok := memo[k]; ok {
			return v
		}
		var r bool
		switch {
		case i == len(a) && j == len(b):
			r = true
		case i < len(a) && a[i].kind == stepDeep:
			// "**" matches no more steps, or takes b's next step (or b's "**" ends).
			r = f(i+1, j) || j < len(b) && f(i, j+1)
		case j < len(b) && b[j].kind == stepDeep:
			r = f(i, j+1) || i < len(a) && f(i+1, j)
		case i < len(a) && j < len(b):
			r = compatible(a[i], b[j]) && f(i+1, j+1)
		}
		memo[k] = r
		return r
	}
	return f(0, 0)
}

// compatible reports whether one step of a concrete path can match both x and y, neither
// being "**".
func compatible(x, y step) bool {
	switch {
	case x.kind == stepElem || y.kind == stepElem:
		return x.kind == y.kind
	case x.kind == stepName && y.kind == stepName:
		return x.key == y.key
	}
	return true // a name and "*", or two "*"
}

// add appends s to ss unless set has it; at a "**" it adds the state past it as well (the
// "**" matching no further step).
func (c *compiled) add(ss []state, s state, set *stateSet) []state {
	for {
		if id := c.offs[s.pat] + s.pos; set.mark[id] != set.stamp {
			set.mark[id] = set.stamp
			ss = append(ss, s)
		}
		steps := c.pats[s.pat].steps
		if s.pos >= len(steps) || steps[s.pos].kind != stepDeep {
			return ss
		}
		s.pos++
	}
}

// advance appends to dst the states reached from ss by one step of a concrete path: into
// the member key (elem false) or into an array element (elem true).
func (c *compiled) advance(dst, ss []state, key string, elem bool, set *stateSet) []state {
	set.reset(c.nstates)
	for _, s := range ss {
		steps := c.pats[s.pat].steps
		if s.pos == len(steps) {
			continue
		}
		switch st := steps[s.pos]; st.kind {
		case stepDeep:
			dst = c.add(dst, s, set)
		case stepName:
			if !elem && key == st.key {
				dst = c.add(dst, state{s.pat, s.pos + 1}, set)
			}
		case stepAny:
			if !elem {
				dst = c.add(dst, state{s.pat, s.pos + 1}, set)
			}
		case stepElem:
			if elem {
				dst = c.add(dst, state{s.pat, s.pos + 1}, set)
			}
		}
	}
	return dst
}

func checkRule(r Rule) error {
	if r.Mode < Transit || r.Mode > Keep {
		return fmt.Errorf("path %q: invalid mode %d", r.Path, byte(r.Mode))
	}
	if r.Unmatched != 0 {
		return fmt.Errorf("path %q: unmatched applies to the unmatched option only", r.Path)
	}
	if (r.card() || r.InVault) && r.Mode != FPE {
		return fmt.Errorf("path %q: bin, last4, luhn and vault apply to fpe only", r.Path)
	}
	if r.Mode != Transform {
		if r.Role != "" || r.Transformation != "" {
			return fmt.Errorf("path %q: a role and transformation apply to transform only", r.Path)
		}
		return nil
	}
	if !wire.ValidKeyID(r.Role) {
		return fmt.Errorf("path %q: transform role must be 1-%d characters from [A-Za-z0-9._-]", r.Path, wire.MaxKeyIDLen)
	}
	if r.Transformation != "" && !wire.ValidKeyID(r.Transformation) {
		return fmt.Errorf("path %q: transformation must be 1-%d characters from [A-Za-z0-9._-]", r.Path, wire.MaxKeyIDLen)
	}
	return nil
}

// subjectSource is where a message's subject ID is: a metadata entry, or the value at a
// literal path of the body.
type subjectSource struct {
	metadata string   // metadata key; "" for a path
	keys     []string // the path's keys
	key      string   // SubjectKeyPrefix: the subject's key, named directly
}

// parseSubject reads the value of a subject option: "metadata:KEY" or a path of keys
// separated by "." (no wildcards, no arrays: one message has one subject).
func parseSubject(s string) (*subjectSource, error) {
	if key, ok := strings.CutPrefix(s, SubjectKeyOption); ok {
		if !keyring.IsSubjectKey(key) {
			return nil, fmt.Errorf("subject=%.80q: want key:%s and 32 hex digits", s, keyring.SubjectKeyPrefix)
		}
		return &subjectSource{key: key}, nil
	}
	if key, ok := strings.CutPrefix(s, SubjectMetadataPrefix); ok {
		if key == "" || wire.Reserved(key) || !utf8.ValidString(key) {
			return nil, fmt.Errorf("subject=%.64q: want metadata:KEY, KEY a metadata key of the producer's", s)
		}
		return &subjectSource{metadata: key}, nil
	}
	keys := strings.Split(s, ".")
	for _, k := range keys {
		if k == "" || strings.Trim(k, keyChars) != "" {
			return nil, fmt.Errorf("subject=%.64q: want a path of keys of [A-Za-z0-9_-] separated by \".\" (no wildcards or arrays), or metadata:KEY", s)
		}
	}
	return &subjectSource{keys: keys}, nil
}

// keyChars are the characters of a key in a path.
const keyChars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"

// subjectOf finds the subject ID of a message: the metadata entry's value, or the JSON
// string (unescaped) or number (as written) at the path. A message without one, or with
// an empty one, is refused: ErrSubject.
func (src *subjectSource) subjectOf(in *Input) (string, error) {
	if src.metadata != "" {
		v := in.Metadata[src.metadata]
		if v == "" {
			return "", fmt.Errorf("%w: no metadata entry %.64q", ErrSubject, src.metadata)
		}
		return v, nil
	}
	v, problem := wire.ScalarAt(in.Body, src.keys)
	switch {
	case problem == wire.ScalarNotObject || problem == wire.ScalarMissing:
		return "", fmt.Errorf("%w: no value at %q", ErrSubject, strings.Join(src.keys, "."))
	case problem == wire.ScalarFound && v != "":
		return v, nil
	}
	return "", fmt.Errorf("%w: the value at %q is not a non-empty JSON string or a number", ErrSubject, strings.Join(src.keys, "."))
}
