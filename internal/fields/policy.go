package fields

import (
	"fmt"
	"strings"

	"github.com/pubcrypt/pubcrypt/internal/fpe"
	"github.com/pubcrypt/pubcrypt/internal/wire"
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
)

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
	}
	return 0
}

func modeOf(name string) (Mode, bool) {
	for m := Transit; m <= Transform; m++ {
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
}

func (r Rule) card() bool { return r.KeepBIN || r.KeepLast4 || r.Luhn }

func (r Rule) cardOptions() fpe.CardOptions {
	return fpe.CardOptions{KeepBIN: r.KeepBIN, KeepLast4: r.KeepLast4, Luhn: r.Luhn}
}

// String returns the rule in the policy grammar: "card_number=fpe(bin,luhn)",
// "ssn=transform(pii/ssn-fpe)".
func (r Rule) String() string {
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

// String returns the policy in the grammar ParsePolicy reads; options come out in the
// order bin, last4, luhn, vault.
func (p Policy) String() string {
	s := make([]string, len(p))
	for i, r := range p {
		s[i] = r.String()
	}
	return strings.Join(s, ",")
}

// Validate reports whether p can be used: valid paths and modes, options only with FPE,
// no path twice and no path inside another (a value is protected whole or not at all).
func (p Policy) Validate() error {
	_, err := compile(p)
	return err
}

// ParsePolicy reads a policy such as
//
//	name=transit, card_number=fpe(bin,luhn), items[].sku=envelope
//
// Rules are separated by commas; each is path=mode, mode one of transit, envelope,
// deterministic, fpe, transform; fpe may take options in parentheses: bin, last4, luhn,
// and vault (the key service runs FF1, Rule.InVault);
// transform needs the Vault Transform role, and optionally its transformation, in
// parentheses: transform(ROLE) or transform(ROLE/TRANSFORMATION). Spaces and tabs
// around the parts are ignored. The empty string is the empty policy.
// docs/FIELDS.md gives the grammar.
func ParsePolicy(s string) (Policy, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var p Policy
	for i, text := range splitTop(s) {
		r, err := parseRule(text)
		if err != nil {
			return nil, fmt.Errorf("%w: rule %d: %w", ErrPolicy, i+1, err)
		}
		p = append(p, r)
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return p, nil
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

// step is one segment of a parsed path: an object key, or every element of an array.
type step struct {
	key  string
	elem bool
}

// parsePath reads path = segment *("." segment), segment = name *("[]"),
// name = 1*[A-Za-z0-9_-].
func parsePath(p string) ([]step, error) {
	if p == "" {
		return nil, fmt.Errorf("empty path")
	}
	if len(p) > maxPathLen {
		return nil, fmt.Errorf("path %.40q...: longer than %d bytes", p, maxPathLen)
	}
	var steps []step
	for seg := range strings.SplitSeq(p, ".") {
		name := strings.TrimRight(seg, "[]")
		if name == "" {
			return nil, fmt.Errorf("path %q: empty key", p)
		}
		for i := 0; i < len(name); i++ {
			if !nameChar(name[i]) {
				return nil, fmt.Errorf("path %q: character %q not allowed in a key (want [A-Za-z0-9_-], \".\" between keys, \"[]\" after one)", p, name[i])
			}
		}
		steps = append(steps, step{key: name})
		for rest := seg[len(name):]; rest != ""; rest = rest[2:] {
			if !strings.HasPrefix(rest, "[]") {
				return nil, fmt.Errorf("path %q: want \"[]\" after key %q", p, name)
			}
			steps = append(steps, step{elem: true})
		}
	}
	return steps, nil
}

func nameChar(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-'
}

// node is a trie of rule paths: a document is walked along it, so one pass finds the
// values of every rule.
type node struct {
	keys map[string]*node
	elem *node
	rule int // index of the rule whose path ends here, -1 if none
}

func newNode() *node { return &node{rule: -1} }

// child returns the node under n for s, adding it if needed.
func (n *node) child(s step) *node {
	if s.elem {
		if n.elem == nil {
			n.elem = newNode()
		}
		return n.elem
	}
	c := n.keys[s.key]
	if c == nil {
		if n.keys == nil {
			n.keys = make(map[string]*node)
		}
		c = newNode()
		n.keys[s.key] = c
	}
	return c
}

// compiled is a validated policy ready to locate values.
type compiled struct {
	rules Policy
	root  *node
}

func compile(p Policy) (*compiled, error) {
	c := &compiled{rules: p, root: newNode()}
	firstFPE := -1
	for i, r := range p {
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
		n := c.root
		for _, s := range steps {
			if n.rule >= 0 {
				return nil, fmt.Errorf("%w: path %q lies inside %q, which is protected whole", ErrPolicy, r.Path, p[n.rule].Path)
			}
			n = n.child(s)
		}
		switch {
		case n.rule >= 0:
			return nil, fmt.Errorf("%w: path %q appears twice", ErrPolicy, r.Path)
		case n.elem != nil || len(n.keys) > 0:
			return nil, fmt.Errorf("%w: path %q contains another rule's path; a value is protected whole", ErrPolicy, r.Path)
		}
		n.rule = i
	}
	return c, nil
}

func checkRule(r Rule) error {
	if r.Mode < Transit || r.Mode > Transform {
		return fmt.Errorf("path %q: invalid mode %d", r.Path, byte(r.Mode))
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
