package fields

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/pubcrypt/pubcrypt/internal/envelope"
	"github.com/pubcrypt/pubcrypt/keyring"
)

var update = flag.Bool("update", false, "regenerate "+vectorsPath)

const vectorsPath = "../../testdata/fields/v1.json"

// vectorFile is the layout of testdata/fields/v1.json (docs/FIELDS.md, "Test vectors").
// Byte strings are lower-case hex, bodies are JSON text, seq is a decimal string.
type vectorFile struct {
	Format   string           `json:"format"`
	Comment  []string         `json:"comment"`
	Positive []positiveVector `json:"positive"`
	Negative []negativeVector `json:"negative"`
	// Policies are texts of the policy grammar (section 4.3), each either valid, with its
	// canonical form, or refused.
	Policies []policyVector `json:"policies"`
	// Unmatched says, for a policy and a body, what a sender does (section 4.5): fields,
	// body (encrypt it whole), refuse, clear, or not_json (refused: not a JSON document).
	Unmatched []unmatchedVector `json:"unmatched"`
}

type policyVector struct {
	Text      string `json:"text"`
	Canonical string `json:"canonical,omitempty"`
	Error     string `json:"error,omitempty"` // "policy"
}

type unmatchedVector struct {
	Policy string `json:"policy"`
	Body   string `json:"body"`
	Action string `json:"action"`
}

var policyInputs = []string{
	"name=transit, card_number=fpe(bin,luhn), items[].sku=envelope",
	"default=envelope; keep=order_id,created_at,items[].sku; **.card_number=fpe(bin,luhn)",
	"default=transit;keep=meta;**.ssn=envelope;user.ssn=deterministic",
	"items[].*=transit, *.city=deterministic, **.card_number=fpe(luhn)",
	"name=transit; unmatched=refuse",
	"default=envelope; unmatched=clear",
	"default=deterministic",              // the default is transit or envelope
	"keep=id",                            // keep needs a default
	"name=transit, default=envelope",     // an option inside a rule list
	"**=envelope",                        // "**" must be followed by a key
	"a.*=transit, *.b=envelope",          // same rank, can select a.b
	"default=envelope; keep=a; a.b=keep", // literal inside literal, as in version 1
	"unmatched=encrypt",
}

var unmatchedInputs = []struct{ policy, body string }{
	{"name=transit", `{"name":"Ann"}`},
	{"name=transit", ` ["Ann"] `},
	{"name=transit", `"Ann"`},
	{"default=envelope", `42`},
	{"default=envelope;unmatched=refuse", `[{"name":"Ann"}]`},
	{"default=envelope;unmatched=clear", `null`},
	{"default=envelope;unmatched=refuse", `{}`},
	{"name=transit", `{"name":`},
}

// unmatchedAction is what a sender does with body under p (section 4.5).
func unmatchedAction(p Policy, body string) string {
	if u, ok := p.Unmatched([]byte(body)); ok {
		return u.String()
	}
	if !json.Valid([]byte(body)) {
		return "not_json"
	}
	return "fields"
}

func policyVectors() []policyVector {
	var out []policyVector
	for _, text := range policyInputs {
		v := policyVector{Text: text}
		if p, err := ParsePolicy(text); err != nil {
			v.Error = "policy"
		} else {
			v.Canonical = p.String()
		}
		out = append(out, v)
	}
	return out
}

type positiveVector struct {
	Name       string            `json:"name"`
	DataKey    string            `json:"data_key"`
	KeyID      string            `json:"key_id"`
	Wrapped    string            `json:"wrapped"`
	Seq        uint64            `json:"seq,string"`
	MessageID  string            `json:"message_id"`
	Keys       vectorKeys        `json:"keys"`
	FPEKey     *vectorFPEKey     `json:"fpe_key,omitempty"`
	Policy     string            `json:"policy"`
	Body       string            `json:"body"`
	Metadata   map[string]string `json:"metadata"`
	Transit    []vectorCall      `json:"transit"`
	Fields     []vectorField     `json:"fields"`
	Header     string            `json:"header"`
	Manifest   string            `json:"manifest"`
	MACAD      string            `json:"mac_ad"`
	Tag        string            `json:"tag"`
	BodyOut    string            `json:"body_out"`
	MetaOut    map[string]string `json:"metadata_out"`
	BodyOpened string            `json:"body_opened"`
}

type vectorKeys struct {
	Transit       string `json:"transit,omitempty"`
	Deterministic string `json:"deterministic,omitempty"`
	FPE           string `json:"fpe,omitempty"`
}

type vectorFPEKey struct {
	Name    string `json:"name"`
	Version int    `json:"version"`
	Key     string `json:"key"`
}

// vectorCall is one EncryptBatch call; receiving makes the matching DecryptBatch call
// with the same items.
type vectorCall struct {
	Key   string       `json:"key"`
	Items []vectorItem `json:"items"`
}

type vectorItem struct {
	Plaintext      string `json:"plaintext"`
	AssociatedData string `json:"associated_data,omitempty"`
	Context        string `json:"context,omitempty"`
	Ciphertext     string `json:"ciphertext"`
}

type vectorField struct {
	Path        string `json:"path"`
	Rule        string `json:"rule"`
	Mode        string `json:"mode"`
	Plaintext   string `json:"plaintext"`
	Seq         string `json:"seq,omitempty"`
	Nonce       string `json:"nonce,omitempty"`
	AD          string `json:"ad,omitempty"`
	Context     string `json:"context,omitempty"`
	Tweak       string `json:"tweak,omitempty"`
	Replacement string `json:"replacement"`
}

type negativeVector struct {
	Name     string            `json:"name"`
	DataKey  string            `json:"data_key"`
	Body     string            `json:"body"`
	Metadata map[string]string `json:"metadata"`
	Error    string            `json:"error"`
}

// Error kinds as the vectors name them (docs/FIELDS.md, "Receiving").
const (
	kindMalformed = "malformed"
	kindAuth      = "auth"
)

func errorKind(err error) string {
	switch {
	case err == nil:
		return "none"
	case errors.Is(err, envelope.ErrAuth):
		return kindAuth
	case errors.Is(err, envelope.ErrMalformed):
		return kindMalformed
	}
	return "other: " + err.Error()
}

type positiveInput struct {
	name, policy, body string
	md                 map[string]string
	seq                uint64
}

var positiveInputs = []positiveInput{
	{
		name:   "worked example (docs/FIELDS.md section 14)",
		policy: "name=envelope,card=fpe(bin,luhn)",
		body:   `{"id":7,"name":"Ann","card":"4111 1111 1111 1111"}`,
		md:     map[string]string{"content-type": "application/json"},
		seq:    5,
	},
	{
		name:   "purchase, every mode",
		policy: "name=transit,email=deterministic,address=envelope,card_number=fpe(bin,luhn),amount=transit,items[].sku=deterministic,items[].price=envelope",
		body: `{"id":"ord-000042","name":"Zanele Mensah","email":"zanele@example.org",` +
			`"address":{"street":"12 Harbour Road","city":"Cork"},"card_number":"4111 1111 1111 1111","amount":137.45,` +
			`"items":[{"sku":"BK-101","price":12.99},{"sku":"SP-330","price":119.95},{"sku":"BK-101","price":4.51}]}`,
		md:  map[string]string{"content-type": "application/json", "trace-id": "4bf92f3577b34da6"},
		seq: 5,
	},
	{
		name:   "envelope only: no key-service call",
		policy: "user.name=envelope,user.age=envelope,tags[]=envelope",
		body:   "{\n  \"user\": { \"name\": \"Ann\", \"age\": 42 },\n  \"tags\": [\"a\", {\"b\": null}]\n}\n",
		md:     map[string]string{},
		seq:    1 << 33,
	},
	{
		name:   "nothing matched: MAC only",
		policy: "ssn=fpe,card.number=transit",
		body:   `{"id":1,"card":"none"}`,
		md:     map[string]string{"tenant": "acme"},
		seq:    0,
	},
	{
		name:   "escaped keys, duplicate keys, non-string values, FPE input with escapes",
		policy: "name=transit,ssn=fpe,flags=transit,phone=fpe(last4)",
		body:   `{"na\u006de":"Zo\u00eb \"Z\"","ssn":"123-45-\u0036789","ssn":"987 65 4321","flags":[true,null,{"x":1.5e3}],"phone":"+1 (555) 010-9999"}`,
		md:     map[string]string{"schema": "person/v2"},
		seq:    77,
	},
	{
		name:   "deny by default: envelope default, keep list, FPE at any depth; new, nested, case-variant and array fields protected",
		policy: "default=envelope; keep=order_id,created_at,items[].sku; **.card_number=fpe(bin,luhn)",
		body: `{"order_id":"ord-7","created_at":"2026-12-03T14:00:00Z","Name":"Ann","email":"ann@example.org",` +
			`"payment":{"card_number":"4111 1111 1111 1111","amount":12.5},"items":[{"sku":"BK-1","qty":2,"note":null}],"tags":[],"gift":true}`,
		md:  map[string]string{"content-type": "application/json"},
		seq: 9,
	},
	{
		name:   "deny by default: transit default; a literal rule beats **, a protecting rule beats keep, a key no path can name",
		policy: "default=transit; keep=meta; **.ssn=envelope; user.ssn=deterministic",
		body:   `{"meta":{"source":"web","ssn":"078-05-1120"},"user":{"ssn":"219-09-9999","id":7},"ssn":"457-55-5462","home address":{"city":"Cork"}}`,
		md:     map[string]string{},
		seq:    100,
	},
	{
		name:   "wildcards in an allow-list: ** at the top level and deeper, items[].* (more specific than **), * as one key",
		policy: "**.card_number=fpe(luhn), items[].*=transit, *.city=deterministic",
		body: `{"card_number":"4111111111111111","items":[{"a":1,"card_number":"5500000000000004","b":{"c":2}},"x"],` +
			`"home":{"city":"Cork"},"work":{"city":"Cork"},"wallet":{"card_number":"4000056655665556"}}`,
		md:  map[string]string{"schema": "wallet/v1"},
		seq: 3,
	},
	{
		name:   "unmatched=clear: a top-level array sent readable, MAC only",
		policy: "default=envelope; keep=id; unmatched=clear",
		body:   `[{"id":1,"name":"Ann"},"x"]`,
		md:     map[string]string{},
		seq:    12,
	},
}

func TestVectors(t *testing.T) {
	if *update {
		writeVectors(t)
	}
	data, err := os.ReadFile(vectorsPath)
	if err != nil {
		t.Fatal(err)
	}
	var f vectorFile
	if err := json.Unmarshal(data, &f); err != nil {
		t.Fatal(err)
	}
	if len(f.Positive) != len(positiveInputs) || len(f.Negative) == 0 {
		t.Fatalf("%s has %d positive and %d negative vectors", vectorsPath, len(f.Positive), len(f.Negative))
	}
	for _, v := range f.Positive {
		t.Run(v.Name, func(t *testing.T) { checkPositive(t, v) })
	}
	if !reflect.DeepEqual(f.Policies, policyVectors()) {
		t.Errorf("%s: policies differ from what ParsePolicy says", vectorsPath)
	}
	if len(f.Unmatched) != len(unmatchedInputs) {
		t.Errorf("%s: %d unmatched vectors, want %d", vectorsPath, len(f.Unmatched), len(unmatchedInputs))
	}
	for _, v := range f.Unmatched {
		p, err := ParsePolicy(v.Policy)
		if err != nil {
			t.Fatal(err)
		}
		if got := unmatchedAction(p, v.Body); got != v.Action {
			t.Errorf("unmatched %q on %q: %s, want %s", v.Policy, v.Body, got, v.Action)
		}
	}
	for _, v := range f.Negative {
		t.Run(v.Name, func(t *testing.T) {
			o := NewOpener(&replayVault{t: t}, keyring.NewUnwrapCache(fixedKMS{key: unhex(t, v.DataKey)}, keyring.CacheOptions{}))
			_, _, err := o.Open(context.Background(), []byte(v.Body), v.Metadata)
			if got := errorKind(err); got != v.Error {
				t.Errorf("Open: %s (%v), want %s", got, err, v.Error)
			}
		})
	}
}

func checkPositive(t *testing.T, v positiveVector) {
	ctx := context.Background()
	key := &keyring.DataKey{Plaintext: unhex(t, v.DataKey), KeyID: v.KeyID, Wrapped: v.Wrapped, Version: 1}
	rv := &replayVault{t: t, calls: v.Transit, fpe: v.FPEKey}
	s := NewSealer(rv, nil, Keys(v.Keys), SealerOptions{})
	s.reserve = func(ctx context.Context, sizes []int) (*keyring.DataKey, uint64, error) { return key, v.Seq, nil }
	s.rand = bytes.NewReader(unhex(t, v.MessageID))
	out, err := s.Protect(ctx, []Input{{Body: []byte(v.Body), Metadata: v.Metadata, Policy: mustPolicy(t, v.Policy)}})
	if err != nil {
		t.Fatalf("Protect: %v", err)
	}
	if string(out[0].Body) != v.BodyOut {
		t.Errorf("body =\n%s\nwant\n%s", out[0].Body, v.BodyOut)
	}
	if !maps.Equal(out[0].Metadata, v.MetaOut) {
		t.Errorf("metadata =\n%v\nwant\n%v", out[0].Metadata, v.MetaOut)
	}
	if out[0].Metadata[envelope.HeaderKey] != v.Header || out[0].Metadata[ManifestKey] != v.Manifest {
		t.Errorf("header or manifest differ from the intermediate values")
	}
	unsigned, _, _ := strings.Cut(v.Manifest, tagField)
	ad := macAD(v.Header, v.Wrapped, unsigned, clearKeys(v.MetaOut), v.MetaOut, []byte(v.BodyOut))
	if hex.EncodeToString(ad) != v.MACAD {
		t.Errorf("mac_ad differs")
	}

	o := NewOpener(rv, keyring.NewUnwrapCache(fixedKMS{key: key.Plaintext}, keyring.CacheOptions{}))
	body, md, err := o.Open(ctx, []byte(v.BodyOut), v.MetaOut)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if string(body) != v.BodyOpened || !maps.Equal(md, v.Metadata) {
		t.Errorf("Open = %s %v, want %s %v", body, md, v.BodyOpened, v.Metadata)
	}
}

// replayVault answers from recorded calls and checks that the requests match them.
type replayVault struct {
	t     *testing.T
	calls []vectorCall
	fpe   *vectorFPEKey
}

func (r *replayVault) find(key string) *vectorCall {
	for i := range r.calls {
		if r.calls[i].Key == key {
			return &r.calls[i]
		}
	}
	return nil
}

func (r *replayVault) EncryptBatch(ctx context.Context, key string, items []TransitItem) error {
	c := r.find(key)
	if c == nil || len(c.Items) != len(items) {
		return fmt.Errorf("replay: unexpected encrypt call with key %q, %d items", key, len(items))
	}
	for i := range items {
		want := c.Items[i]
		if hex.EncodeToString(items[i].Plaintext) != want.Plaintext || hex.EncodeToString(items[i].AssociatedData) != want.AssociatedData ||
			hex.EncodeToString(items[i].Context) != want.Context {
			return fmt.Errorf("replay: encrypt item %d with key %q differs from the vector", i, key)
		}
		items[i].Ciphertext = want.Ciphertext
	}
	return nil
}

func (r *replayVault) DecryptBatch(ctx context.Context, key string, items []TransitItem) error {
	c := r.find(key)
	if c == nil || len(c.Items) != len(items) {
		return fmt.Errorf("replay: unexpected decrypt call with key %q, %d items", key, len(items))
	}
	for i := range items {
		want := c.Items[i]
		if items[i].Ciphertext != want.Ciphertext || hex.EncodeToString(items[i].AssociatedData) != want.AssociatedData ||
			hex.EncodeToString(items[i].Context) != want.Context {
			return fmt.Errorf("replay: decrypt item %d with key %q differs from the vector", i, key)
		}
		items[i].Plaintext, _ = hex.DecodeString(want.Plaintext)
	}
	return nil
}

func (r *replayVault) FPEKey(ctx context.Context, key string, version int) ([]byte, int, error) {
	if r.fpe == nil || key != r.fpe.Name || (version != 0 && version != r.fpe.Version) {
		return nil, 0, fmt.Errorf("replay: unexpected FPE key request %q version %d", key, version)
	}
	k, _ := hex.DecodeString(r.fpe.Key)
	return k, r.fpe.Version, nil
}

// fixedKMS unwraps every wrapped key to one data key.
type fixedKMS struct{ key []byte }

func (f fixedKMS) GenerateDataKey(ctx context.Context) (*keyring.DataKey, error) {
	return nil, errors.New("fixedKMS: generate")
}

func (f fixedKMS) UnwrapDataKey(ctx context.Context, keyID, wrapped string) ([]byte, error) {
	return bytes.Clone(f.key), nil
}

// recordingVault records the calls a Sealer makes to a fakeVault.
type recordingVault struct {
	*fakeVault
	mu    sync.Mutex
	calls []vectorCall
	fpe   *vectorFPEKey
}

func (r *recordingVault) EncryptBatch(ctx context.Context, key string, items []TransitItem) error {
	if err := r.fakeVault.EncryptBatch(ctx, key, items); err != nil {
		return err
	}
	c := vectorCall{Key: key}
	for _, it := range items {
		c.Items = append(c.Items, vectorItem{
			Plaintext: hex.EncodeToString(it.Plaintext), AssociatedData: hex.EncodeToString(it.AssociatedData),
			Context: hex.EncodeToString(it.Context), Ciphertext: it.Ciphertext,
		})
	}
	r.mu.Lock()
	r.calls = append(r.calls, c)
	slices.SortFunc(r.calls, func(a, b vectorCall) int { return strings.Compare(a.Key, b.Key) })
	r.mu.Unlock()
	return nil
}

func (r *recordingVault) FPEKey(ctx context.Context, key string, version int) ([]byte, int, error) {
	k, v, err := r.fakeVault.FPEKey(ctx, key, version)
	if err == nil {
		r.fpe = &vectorFPEKey{Name: key, Version: v, Key: hex.EncodeToString(k)}
	}
	return k, v, err
}

func unhex(t testing.TB, s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func derive(label string, n int) []byte {
	sum := sha256.Sum256([]byte("pubcrypt fields test vectors: " + label))
	return sum[:n]
}

func writeVectors(t *testing.T) {
	ctx := context.Background()
	f := vectorFile{
		Format: "pubcrypt fields v1",
		Comment: []string{
			"Test vectors for docs/FIELDS.md. Byte strings are lower-case hex; bodies are JSON text; seq is a decimal string.",
			"positive: protecting body and metadata under policy with data_key (key_id, wrapped), first sequence number seq,",
			"message_id, keys and fpe_key, where the key service answers the calls in transit, gives exactly body_out and",
			"metadata_out; fields, header, manifest, mac_ad and tag are intermediate values. Receiving body_out and metadata_out",
			"makes one decrypt call per entry of transit with the same items and gives back body_opened and metadata.",
			"negative: receiving body and metadata, with data_key as the unwrapped data key, fails with error: malformed or auth.",
		},
	}
	for i, in := range positiveInputs {
		fv := newFakeVault()
		fv.rand = rand.NewChaCha8([32]byte(derive("vault nonces "+in.name, 32)))
		for range i { // some vectors use later key versions
			fv.rotate("pii")
			fv.rotate("pii-fpe")
		}
		rec := &recordingVault{fakeVault: fv}
		key := &keyring.DataKey{
			Plaintext: derive("data key "+in.name, 32), KeyID: "orders",
			Wrapped: "vault:v1:" + b64.EncodeToString(derive("wrapped "+in.name, 32)), Version: 1,
		}
		id := derive("message id "+in.name, idSize)
		s := NewSealer(rec, nil, testKeys, SealerOptions{})
		s.reserve = func(ctx context.Context, sizes []int) (*keyring.DataKey, uint64, error) { return key, in.seq, nil }
		s.rand = bytes.NewReader(id)
		p := mustPolicy(t, in.policy)
		out, err := s.Protect(ctx, []Input{{Body: []byte(in.body), Metadata: in.md, Policy: p}})
		if err != nil {
			t.Fatalf("%s: %v", in.name, err)
		}
		o := NewOpener(rec, keyring.NewUnwrapCache(fixedKMS{key: key.Plaintext}, keyring.CacheOptions{}))
		opened, _, err := o.Open(ctx, out[0].Body, out[0].Metadata)
		if err != nil {
			t.Fatalf("%s: %v", in.name, err)
		}
		v := positiveVector{
			Name: in.name, DataKey: hex.EncodeToString(key.Plaintext), KeyID: key.KeyID, Wrapped: key.Wrapped,
			Seq: in.seq, MessageID: hex.EncodeToString(id), Policy: in.policy, Body: in.body, Metadata: in.md,
			Keys: vectorKeys(testKeys), Transit: rec.calls, FPEKey: rec.fpe,
			Header: out[0].Metadata[envelope.HeaderKey], Manifest: out[0].Metadata[ManifestKey],
			BodyOut: string(out[0].Body), MetaOut: out[0].Metadata, BodyOpened: string(opened),
		}
		if v.Transit == nil {
			v.Transit = []vectorCall{}
		}
		m, err := parseManifest(v.Manifest, nil)
		if err != nil {
			t.Fatal(err)
		}
		v.MACAD = hex.EncodeToString(macAD(v.Header, v.Wrapped, m.unsigned, clearKeys(v.MetaOut), v.MetaOut, out[0].Body))
		v.Tag = hex.EncodeToString(m.tag[:])
		v.Fields = vectorFields(t, p, in, out[0], m, id)
		f.Positive = append(f.Positive, v)
	}
	f.Negative = negativeVectors(t, f.Positive[1], f.Positive[2], f.Positive[5])
	f.Policies = policyVectors()
	for _, in := range unmatchedInputs {
		f.Unmatched = append(f.Unmatched, unmatchedVector{Policy: in.policy, Body: in.body, Action: unmatchedAction(mustPolicy(t, in.policy), in.body)})
	}
	data, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll("../../testdata/fields", 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(vectorsPath, append(data, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
}

// vectorFields lists the intermediate values of every protected field.
func vectorFields(t *testing.T, p Policy, in positiveInput, out Output, m *manifest, id []byte) []vectorField {
	c, _ := compile(p)
	before, err := locate([]byte(in.body), c)
	if err != nil {
		t.Fatal(err)
	}
	after, err := locate(out.Body, c)
	if err != nil || len(after) != len(before) {
		t.Fatalf("relocating: %v", err)
	}
	fields := []vectorField{}
	env := uint64(0)
	for k, mt := range before {
		r := p[mt.rule]
		rule, mode := r.Path, strings.TrimPrefix(r.String(), r.Path+"=")
		if r.Path == DefaultPath {
			rule, mode = "(default)", r.Mode.String()
		}
		f := vectorField{
			Path: mt.path, Rule: rule, Mode: mode,
			Plaintext:   hex.EncodeToString([]byte(in.body[mt.start:mt.end])),
			Replacement: string(out.Body[after[k].start:after[k].end]),
		}
		switch r.Mode {
		case Transit:
			f.AD = hex.EncodeToString(fieldAD(id, mt.path))
		case Envelope:
			env++
			f.Seq = fmt.Sprint(in.seq + env)
			f.Nonce = hex.EncodeToString(nonceFor(in.seq + env))
			f.AD = hex.EncodeToString(fieldAD(id, mt.path))
		case Deterministic:
			f.Context = detContext + r.Path
		case FPE:
			f.Tweak = r.Path
		}
		fields = append(fields, f)
	}
	return fields
}

func negativeVectors(t *testing.T, v, venv, vdeny positiveVector) []negativeVector {
	neg := func(name string, base positiveVector, body string, edit func(md map[string]string), kind string) negativeVector {
		md := maps.Clone(base.MetaOut)
		if edit != nil {
			edit(md)
		}
		return negativeVector{Name: name, DataKey: base.DataKey, Body: body, Metadata: md, Error: kind}
	}
	flip := func(s string, i int) string {
		b := []byte(s)
		b[i] ^= 0x01
		return string(b)
	}
	setManifest := func(f func(string) string) func(map[string]string) {
		return func(md map[string]string) { md[ManifestKey] = f(md[ManifestKey]) }
	}
	// remac gives a message a valid MAC over the changed body: what only a holder of the
	// data key can do. The field's own authentication must still refuse it.
	remac := func(base positiveVector, body string) func(map[string]string) {
		return func(md map[string]string) {
			r, err := parseReceived(md, nil)
			if err != nil {
				t.Fatal(err)
			}
			tag := gcmOf(unhex(t, base.DataKey)).Seal(nil, nonceFor(r.seq0), nil, macAD(r.header, r.dek, r.m.unsigned, clearKeys(md), md, []byte(body)))
			copy(r.m.tag[:], tag)
			md[ManifestKey] = r.m.format()
		}
	}
	var envVals []string
	for _, f := range venv.Fields {
		envVals = append(envVals, f.Replacement)
	}
	swapped := strings.Replace(strings.Replace(venv.BodyOut, envVals[0], "\x00", 1), envVals[1], envVals[0], 1)
	swapped = strings.Replace(swapped, "\x00", envVals[1], 1)
	notString := strings.Replace(venv.BodyOut, envVals[1], "42", 1)

	// The deny-by-default vector: its Name and email values (both the default's).
	name, email := vdeny.Fields[0].Replacement, vdeny.Fields[1].Replacement
	denySwapped := strings.Replace(strings.Replace(vdeny.BodyOut, name, "\x00", 1), email, name, 1)
	denySwapped = strings.Replace(denySwapped, "\x00", email, 1)
	dropKeep := func(s string) string { return strings.Replace(s, "order_id:k,", "", 1) }
	var dropKeepMD map[string]string
	{
		md := maps.Clone(vdeny.MetaOut)
		md[ManifestKey] = dropKeep(md[ManifestKey])
		remac(vdeny, vdeny.BodyOut)(md)
		dropKeepMD = md
	}

	list := []negativeVector{
		neg("body byte changed", v, flip(v.BodyOut, 20), nil, kindAuth),
		neg("clear byte of the body changed (whitespace added)", venv, venv.BodyOut+" ", nil, kindAuth),
		neg("FPE value changed to another valid card number", v, strings.Replace(v.BodyOut, v.Fields[3].Replacement, `"4111 1111 1111 1111"`, 1), nil, kindAuth),
		neg("manifest tag changed", v, v.BodyOut, setManifest(func(s string) string { return flip(s, len(s)-2) }), kindAuth),
		neg("manifest rule changed", v, v.BodyOut, setManifest(func(s string) string { return strings.Replace(s, "address:e", "address:t", 1) }), kindAuth),
		neg("manifest id changed", v, v.BodyOut, setManifest(func(s string) string { return flip(s, 7) }), kindAuth),
		neg("clear metadata changed", v, v.BodyOut, func(md map[string]string) { md["trace-id"] = "0000000000000000" }, kindAuth),
		neg("clear metadata added", v, v.BodyOut, func(md map[string]string) { md["x-added"] = "1" }, kindAuth),
		neg("clear metadata removed", v, v.BodyOut, func(md map[string]string) { delete(md, "trace-id") }, kindAuth),
		neg("wrong data key", v, v.BodyOut, nil, kindAuth),
		neg("envelope values swapped, MAC recomputed", venv, swapped, remac(venv, swapped), kindAuth),
		neg("envelope value replaced by a number, MAC recomputed", venv, notString, remac(venv, notString), kindMalformed),
		neg("unknown reserved key", v, v.BodyOut, func(md map[string]string) { md["pubcrypt-x"] = "1" }, kindMalformed),
		neg("data key entry missing", v, v.BodyOut, func(md map[string]string) { delete(md, envelope.DEKKey) }, kindMalformed),
		neg("header missing", v, v.BodyOut, func(md map[string]string) { delete(md, envelope.HeaderKey) }, kindMalformed),
		neg("header with m=1", v, v.BodyOut, func(md map[string]string) { md[envelope.HeaderKey] += ";m=1" }, kindMalformed),
		neg("header nonce not starting with zero bytes", v, v.BodyOut, func(md map[string]string) {
			md[envelope.HeaderKey] = strings.Replace(md[envelope.HeaderKey], ";n=AAAA", ";n=AQAA", 1)
		}, kindMalformed),
		neg("manifest version 2", v, v.BodyOut, setManifest(func(s string) string { return "v2" + s[2:] }), kindMalformed),
		neg("manifest with an unknown field", v, v.BodyOut, setManifest(func(s string) string { return strings.Replace(s, ";r=", ";x=1;r=", 1) }), kindMalformed),
		neg("manifest FPE options out of order", v, v.BodyOut, setManifest(func(s string) string { return strings.Replace(s, ":fbc", ":fcb", 1) }), kindMalformed),
		neg("manifest names a key no rule uses", v, v.BodyOut, setManifest(func(s string) string { return strings.Replace(s, "card_number:fbc", "card_number:e", 1) }), kindMalformed),
		neg("manifest rule inside another", v, v.BodyOut, setManifest(func(s string) string { return strings.Replace(s, "address:e", "address:e,address.city:e", 1) }), kindMalformed),
		neg("manifest over 1024 bytes", v, v.BodyOut, setManifest(func(s string) string {
			return strings.Replace(s, ";r=", ";r="+strings.Repeat("a", 1024)+":e,", 1)
		}), kindMalformed),
	}
	list = append(list,
		neg("v2: default values swapped, MAC recomputed", vdeny, denySwapped, remac(vdeny, denySwapped), kindAuth),
		neg("v2: keep rule removed from the manifest", vdeny, vdeny.BodyOut, setManifest(dropKeep), kindAuth),
		negativeVector{Name: "v2: keep rule removed, MAC recomputed: the kept clear value is not a ciphertext", DataKey: vdeny.DataKey,
			Body: vdeny.BodyOut, Metadata: dropKeepMD, Error: kindMalformed},
		neg("v2: default removed from the manifest (keep without a default)", vdeny, vdeny.BodyOut,
			setManifest(func(s string) string { return strings.Replace(s, ";d=e", "", 1) }), kindMalformed),
		neg("v2: manifest labelled v1", vdeny, vdeny.BodyOut, setManifest(func(s string) string { return "v1" + s[2:] }), kindMalformed),
		neg("v2: manifest with d= before r=", vdeny, vdeny.BodyOut, setManifest(func(s string) string {
			return strings.Replace(strings.Replace(s, ";d=e", "", 1), ";r=", ";d=e;r=", 1)
		}), kindMalformed),
	)
	for i := range list {
		if list[i].Name == "wrong data key" {
			list[i].DataKey = hex.EncodeToString(derive("some other data key", 32))
		}
	}
	return list
}
