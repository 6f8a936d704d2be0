package envelope

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"maps"
	"os"
	"strings"
	"testing"

	"github.com/pubcrypt/pubcrypt/internal/wire"
)

var update = flag.Bool("update", false, "regenerate "+vectorsPath)

const vectorsPath = "../../testdata/envelope/v1.json"

// vectorFile is the layout of testdata/envelope/v1.json (described in docs/FORMAT.md,
// "Test vectors"). Byte strings are hex; seq is a decimal string so that readers
// without 64-bit integers keep it exact.
type vectorFile struct {
	Format   string           `json:"format"`
	Comment  []string         `json:"comment"`
	Positive []positiveVector `json:"positive"`
	Negative []negativeVector `json:"negative"`
}

type positiveVector struct {
	Name      string            `json:"name"`
	Key       string            `json:"key"`
	KeyID     string            `json:"key_id"`
	Wrapped   string            `json:"wrapped"`
	Seq       uint64            `json:"seq,string"`
	Body      string            `json:"body"`
	Metadata  map[string]string `json:"metadata"`
	Sensitive []string          `json:"sensitive"`

	Header    string `json:"header"`
	Nonce     string `json:"nonce"`
	AD        string `json:"ad"`
	Plaintext string `json:"plaintext"`

	MetadataOut map[string]string `json:"metadata_out"`
	BodyOut     string            `json:"body_out"`
}

type negativeVector struct {
	Name     string            `json:"name"`
	Key      string            `json:"key"`
	Body     string            `json:"body"`
	Metadata map[string]string `json:"metadata"`
	Error    string            `json:"error"`
}

// Error kinds as the vectors name them.
const (
	kindNoEnvelope = "no-envelope"
	kindMalformed  = "malformed"
	kindAuth       = "auth"
)

func errorKind(err error) string {
	switch {
	case err == nil:
		return "none"
	case errors.Is(err, ErrNoEnvelope):
		return kindNoEnvelope
	case errors.Is(err, ErrMalformed):
		return kindMalformed
	case errors.Is(err, ErrAuth):
		return kindAuth
	}
	return "other: " + err.Error()
}

// receive is what a receiver does with a message: Parse, then Open.
func receive(key []byte, body []byte, md map[string]string) ([]byte, map[string]string, error) {
	env, err := Parse(md)
	if err != nil {
		return nil, nil, err
	}
	return env.Open(newAEAD(key), body, md)
}

func newAEAD(key []byte) cipher.AEAD {
	block, err := aes.NewCipher(key)
	if err != nil {
		panic(err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		panic(err)
	}
	return aead
}

func testKey(label string) []byte {
	k := sha256.Sum256([]byte("pubcrypt v1 test key: " + label))
	return k[:]
}

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatalf("bad hex %q: %v", s, err)
	}
	return b
}

func TestVectors(t *testing.T) {
	if *update {
		f := generateVectors(t)
		data, err := json.MarshalIndent(f, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll("../../testdata/envelope", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(vectorsPath, append(data, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	f := readVectors(t)
	if len(f.Positive) == 0 || len(f.Negative) == 0 {
		t.Fatal("no vectors")
	}
	for _, v := range f.Positive {
		t.Run("positive/"+v.Name, func(t *testing.T) { checkPositive(t, v) })
	}
	for _, v := range f.Negative {
		t.Run("negative/"+v.Name, func(t *testing.T) {
			_, _, err := receive(mustHex(t, v.Key), mustHex(t, v.Body), v.Metadata)
			if got := errorKind(err); got != v.Error {
				t.Fatalf("got %s (%v), want %s", got, err, v.Error)
			}
		})
	}
}

func readVectors(t testing.TB) *vectorFile {
	t.Helper()
	data, err := os.ReadFile(vectorsPath)
	if err != nil {
		t.Fatal(err)
	}
	var f vectorFile
	if err := json.Unmarshal(data, &f); err != nil {
		t.Fatal(err)
	}
	return &f
}

func checkPositive(t *testing.T, v positiveVector) {
	key, body := mustHex(t, v.Key), mustHex(t, v.Body)
	gotBody, gotMD, err := Seal(SealInput{
		AEAD: newAEAD(key), KeyID: v.KeyID, Wrapped: v.Wrapped, Seq: v.Seq,
		Body: body, Metadata: v.Metadata, Sensitive: v.Sensitive,
	})
	if err != nil {
		t.Fatalf("Seal: %v", err)
	}
	if got := hex.EncodeToString(gotBody); got != v.BodyOut {
		t.Errorf("body:\n got %s\nwant %s", got, v.BodyOut)
	}
	if !maps.Equal(gotMD, v.MetadataOut) {
		t.Errorf("metadata:\n got %q\nwant %q", gotMD, v.MetadataOut)
	}
	if gotMD[HeaderKey] != v.Header {
		t.Errorf("header: got %q, want %q", gotMD[HeaderKey], v.Header)
	}

	// Intermediate values, recomputed from the spec's definitions.
	nonce := wire.Nonce(v.Seq)
	if got := hex.EncodeToString(nonce[:]); got != v.Nonce {
		t.Errorf("nonce: got %s, want %s", got, v.Nonce)
	}
	ad := buildAD(v.Header, v.Wrapped, clearKeys(nil, v.MetadataOut), v.MetadataOut)
	if got := hex.EncodeToString(ad); got != v.AD {
		t.Errorf("ad:\n got %s\nwant %s", got, v.AD)
	}
	pt, err := newAEAD(key).Open(nil, nonce[:], mustHex(t, v.BodyOut), ad)
	if err != nil {
		t.Fatalf("raw GCM open with the vector's nonce and AD: %v", err)
	}
	if got := hex.EncodeToString(pt); got != v.Plaintext {
		t.Errorf("plaintext:\n got %s\nwant %s", got, v.Plaintext)
	}

	// And back.
	openBody, openMD, err := receive(key, mustHex(t, v.BodyOut), v.MetadataOut)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	if !bytes.Equal(openBody, body) {
		t.Errorf("opened body %x, want %x", openBody, body)
	}
	if !maps.Equal(openMD, v.Metadata) {
		t.Errorf("opened metadata %q, want %q", openMD, v.Metadata)
	}
}

// TestFormatDocExample keeps the worked example in docs/FORMAT.md in step with the
// vectors.
func TestFormatDocExample(t *testing.T) {
	doc, err := os.ReadFile("../../docs/FORMAT.md")
	if err != nil {
		t.Fatal(err)
	}
	squeezed := strings.Join(strings.Fields(string(doc)), "")
	for _, v := range readVectors(t).Positive {
		if v.Name != workedExample {
			continue
		}
		for name, want := range map[string]string{
			"key": v.Key, "header": v.Header, "nonce": v.Nonce, "ad": v.AD,
			"plaintext": v.Plaintext, "body_out": v.BodyOut,
		} {
			if !strings.Contains(squeezed, strings.Join(strings.Fields(want), "")) {
				t.Errorf("docs/FORMAT.md worked example: %s %s not found", name, want)
			}
		}
		return
	}
	t.Fatalf("vector %q not found", workedExample)
}

const workedExample = "worked example: sensitive filename"

// The inputs of the vectors. Outputs come from this implementation, with -update.

type positiveCase struct {
	name      string
	key       []byte
	keyID     string
	wrapped   string
	seq       uint64
	body      []byte
	metadata  map[string]string
	sensitive []string
}

func positiveCases() []positiveCase {
	seqKey := make([]byte, 32)
	for i := range seqKey {
		seqKey[i] = byte(i)
	}
	binaryBody := make([]byte, 0, 1000)
	for h := sha256.Sum256([]byte("body")); len(binaryBody) < 1000; h = sha256.Sum256(h[:]) {
		binaryBody = append(binaryBody, h[:]...)
	}
	binaryBody = binaryBody[:1000]
	vaultWrapped := "vault:v3:" + strings.Repeat("QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo", 2) + "0123456789"
	return []positiveCase{
		{
			name: "empty body, no metadata", key: testKey("empty"), keyID: "orders",
			wrapped: "vault:v1:ZW1wdHkgYm9keQ", seq: 0, body: []byte{},
		},
		{
			name: "small body", key: testKey("small"), keyID: "orders",
			wrapped: vaultWrapped, seq: 1, body: []byte("hello"),
			metadata: map[string]string{"content-type": "text/plain"},
		},
		{
			name: "no metadata, binary body", key: testKey("binary"), keyID: "pubcrypt.transit_key-01",
			wrapped: vaultWrapped, seq: 42, body: binaryBody,
		},
		{
			name: "metadata with non-ASCII UTF-8", key: testKey("utf8"), keyID: "orders",
			wrapped: vaultWrapped, seq: 7, body: []byte(`{"order":1234}`),
			metadata: map[string]string{
				"content-type": "application/json",
				"X-Upper":      "sorts before lower case",
				"x-author":     "Zoë Ünïcødé",
				"x-city":       "東京",
				"x-emoji":      "🔐 sealed",
				"ключ":         "значение",
				"x-empty":      "",
				"":             "empty key",
			},
		},
		{
			name: workedExample, key: seqKey, keyID: "payroll",
			wrapped: "vault:v1:c2FtcGxlIHdyYXBwZWQga2V5", seq: 5, body: []byte("hello, world\n"),
			metadata:  map[string]string{"content-type": "application/pdf", "filename": "Q3 salaries.pdf"},
			sensitive: []string{"filename"},
		},
		{
			name: "several sensitive entries, one sensitive name absent", key: testKey("sensitive"), keyID: "hr",
			wrapped: vaultWrapped, seq: 1000, body: binaryBody[:100],
			metadata: map[string]string{
				"content-type": "application/pdf",
				"filename":     "Gehaltsübersicht März.pdf",
				"owner":        "jürgen@example.com",
				"path":         "",
			},
			sensitive: []string{"path", "owner", "filename", "not-present", "owner"},
		},
		{
			name: "all metadata sensitive", key: testKey("all sensitive"), keyID: "hr",
			wrapped: vaultWrapped, seq: 3, body: []byte("x"),
			metadata:  map[string]string{"filename": "a.txt"},
			sensitive: []string{"filename"},
		},
		{
			name: "largest seq the key source hands out (2^32-1)", key: testKey("seq32"), keyID: "orders",
			wrapped: vaultWrapped, seq: 1<<32 - 1, body: []byte("last message under this key"),
			metadata: map[string]string{"content-type": "text/plain"},
		},
		{
			name: "largest seq the format encodes (2^64-1)", key: testKey("seq64"), keyID: "orders",
			wrapped: vaultWrapped, seq: 1<<64 - 1, body: []byte("seq 2^64-1"),
		},
		{
			name: "longest key ID and wrapped key", key: testKey("limits"), keyID: strings.Repeat("k", wire.MaxKeyIDLen),
			wrapped: "vault:v9:" + strings.Repeat("A", MaxValueLen-len("vault:v9:")), seq: 1 << 40,
			body:      []byte("limits"),
			metadata:  map[string]string{"a": "1", "secret": "2"},
			sensitive: []string{"secret"},
		},
	}
}

type negativeCase struct {
	name   string
	key    []byte
	body   []byte
	md     map[string]string
	kind   string
	change func(body []byte, md map[string]string) ([]byte, map[string]string)
}

func generateVectors(t *testing.T) *vectorFile {
	f := &vectorFile{
		Format: "pubcrypt envelope v1",
		Comment: []string{
			"Test vectors for docs/FORMAT.md. Byte strings are lower-case hex; seq is a decimal string.",
			"positive: seal (key, key_id, wrapped, seq, body, metadata, sensitive) and expect exactly metadata_out and body_out;",
			"header, nonce, ad and plaintext are the intermediate values. Opening body_out with metadata_out gives back body and metadata.",
			"negative: a received message (body, metadata) and a key; receiving it must fail with the error kind named:",
			"no-envelope (no pubcrypt entries), malformed (entries present but invalid), auth (authentication failed).",
		},
	}
	for _, c := range positiveCases() {
		f.Positive = append(f.Positive, sealVector(t, c))
	}
	for _, c := range negativeCases(t) {
		body, md := c.body, c.md
		if c.change != nil {
			body, md = c.change(bytes.Clone(body), maps.Clone(md))
		}
		_, _, err := receive(c.key, body, md)
		if got := errorKind(err); got != c.kind {
			t.Fatalf("negative vector %q: got %s (%v), want %s", c.name, got, err, c.kind)
		}
		if md == nil {
			md = map[string]string{}
		}
		f.Negative = append(f.Negative, negativeVector{
			Name: c.name, Key: hex.EncodeToString(c.key), Body: hex.EncodeToString(body),
			Metadata: md, Error: c.kind,
		})
	}
	return f
}

func sealVector(t *testing.T, c positiveCase) positiveVector {
	body, md, err := Seal(SealInput{
		AEAD: newAEAD(c.key), KeyID: c.keyID, Wrapped: c.wrapped, Seq: c.seq,
		Body: c.body, Metadata: c.metadata, Sensitive: c.sensitive,
	})
	if err != nil {
		t.Fatalf("vector %q: %v", c.name, err)
	}
	nonce := wire.Nonce(c.seq)
	ad := buildAD(md[HeaderKey], c.wrapped, clearKeys(nil, md), md)
	pt, err := newAEAD(c.key).Open(nil, nonce[:], body, ad)
	if err != nil {
		t.Fatalf("vector %q: %v", c.name, err)
	}
	metadata := c.metadata
	if metadata == nil {
		metadata = map[string]string{}
	}
	sensitive := c.sensitive
	if sensitive == nil {
		sensitive = []string{}
	}
	return positiveVector{
		Name: c.name, Key: hex.EncodeToString(c.key), KeyID: c.keyID, Wrapped: c.wrapped,
		Seq: c.seq, Body: hex.EncodeToString(c.body), Metadata: metadata, Sensitive: sensitive,
		Header: md[HeaderKey], Nonce: hex.EncodeToString(nonce[:]), AD: hex.EncodeToString(ad),
		Plaintext: hex.EncodeToString(pt), MetadataOut: md, BodyOut: hex.EncodeToString(body),
	}
}

// sealRaw encrypts an arbitrary plaintext under a valid envelope: how the vectors get
// authentic messages whose sensitive block is malformed.
func sealRaw(key []byte, header, wrapped string, pt []byte, md map[string]string) ([]byte, map[string]string) {
	_, nonce, _, err := parseHeader(header)
	if err != nil {
		panic(err)
	}
	out := maps.Clone(md)
	out[HeaderKey] = header
	out[DEKKey] = wrapped
	ad := buildAD(header, wrapped, clearKeys(nil, out), out)
	return newAEAD(key).Seal(nil, nonce[:], pt, ad), out
}

func block(entries ...string) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(entries)/2))
	for _, s := range entries {
		b = wire.AppendString(b, s)
	}
	return b
}

func negativeCases(t *testing.T) []negativeCase {
	key := testKey("negative")
	const kid, wrapped = "orders", "vault:v2:bmVnYXRpdmUgdmVjdG9ycw"
	body, md, err := Seal(SealInput{
		AEAD: newAEAD(key), KeyID: kid, Wrapped: wrapped, Seq: 77,
		Body:      []byte("the quick brown fox jumps over the lazy dog"),
		Metadata:  map[string]string{"content-type": "text/plain", "x-region": "eu-west-1", "filename": "fox.txt"},
		Sensitive: []string{"filename"},
	})
	if err != nil {
		t.Fatal(err)
	}
	header := md[HeaderKey] // v1;alg=A256GCM;kid=orders;n=AAAAAAAAAAAAAABN;m=1
	nonceText := header[strings.Index(header, ";n=")+3:][:16]

	withHeader := func(h string) func([]byte, map[string]string) ([]byte, map[string]string) {
		return func(b []byte, md map[string]string) ([]byte, map[string]string) {
			md[HeaderKey] = h
			return b, md
		}
	}
	withEntry := func(k, v string) func([]byte, map[string]string) ([]byte, map[string]string) {
		return func(b []byte, md map[string]string) ([]byte, map[string]string) {
			md[k] = v
			return b, md
		}
	}
	without := func(k string) func([]byte, map[string]string) ([]byte, map[string]string) {
		return func(b []byte, md map[string]string) ([]byte, map[string]string) {
			delete(md, k)
			return b, md
		}
	}
	withBody := func(f func([]byte) []byte) func([]byte, map[string]string) ([]byte, map[string]string) {
		return func(b []byte, md map[string]string) ([]byte, map[string]string) {
			return f(b), md
		}
	}
	flip := func(i int) func([]byte) []byte {
		return func(b []byte) []byte {
			if i < 0 {
				i += len(b)
			}
			b[i] ^= 0x01
			return b
		}
	}
	base := func(name, kind string, change func([]byte, map[string]string) ([]byte, map[string]string)) negativeCase {
		return negativeCase{name: name, key: key, body: body, md: md, kind: kind, change: change}
	}
	// A message without sensitive metadata, to add m=1 to.
	plainBody, plainMD, err := Seal(SealInput{
		AEAD: newAEAD(key), KeyID: kid, Wrapped: wrapped, Seq: 78,
		Body: []byte("no sensitive metadata"), Metadata: map[string]string{"content-type": "text/plain"},
	})
	if err != nil {
		t.Fatal(err)
	}
	// Authentic messages (right key, nonce and associated data) whose sensitive block is
	// malformed.
	sensitiveHeader := wire.FormatHeader(kid, wire.Nonce(79), true)
	badBlock := func(name string, pt []byte) negativeCase {
		b, m := sealRaw(key, sensitiveHeader, wrapped, pt, map[string]string{"content-type": "text/plain"})
		return negativeCase{name: "authentic but malformed sensitive block: " + name, key: key, body: b, md: m, kind: kindMalformed}
	}
	longKID := strings.Repeat("k", wire.MaxKeyIDLen+1)

	return []negativeCase{
		{name: "no envelope: plain message", key: key, body: []byte("plain"), md: map[string]string{"content-type": "text/plain"}, kind: kindNoEnvelope},
		{name: "no envelope: no metadata at all", key: key, body: []byte("plain"), md: nil, kind: kindNoEnvelope},
		{name: "wrong key", key: testKey("other"), body: body, md: md, kind: kindAuth},
		base("flipped first body byte", kindAuth, withBody(flip(0))),
		base("flipped last ciphertext byte before the tag", kindAuth, withBody(flip(-wire.TagSize-1))),
		base("flipped first tag byte", kindAuth, withBody(flip(-wire.TagSize))),
		base("flipped last tag byte", kindAuth, withBody(flip(-1))),
		base("body truncated by one byte", kindAuth, withBody(func(b []byte) []byte { return b[:len(b)-1] })),
		base("body extended by one byte", kindAuth, withBody(func(b []byte) []byte { return append(b, 0) })),
		base("body shorter than the tag", kindMalformed, withBody(func(b []byte) []byte { return b[:wire.TagSize-1] })),
		base("empty body", kindMalformed, withBody(func(b []byte) []byte { return b[:0] })),
		base("header: kid changed", kindAuth, withHeader(strings.Replace(header, "kid=orders", "kid=orderz", 1))),
		base("header: nonce changed", kindAuth, withHeader(strings.Replace(header, nonceText, "AAAAAAAAAAAAAABO", 1))),
		base("header: m=1 removed", kindAuth, withHeader(strings.TrimSuffix(header, ";m=1"))),
		{name: "header: m=1 added", key: key, body: plainBody, md: plainMD, kind: kindAuth,
			change: withHeader(plainMD[HeaderKey] + ";m=1")},
		base("dek: one character changed", kindAuth, withEntry(DEKKey, strings.Replace(wrapped, "v2", "v3", 1))),
		base("clear metadata: value changed", kindAuth, withEntry("x-region", "eu-west-2")),
		base("clear metadata: value emptied", kindAuth, withEntry("x-region", "")),
		base("clear metadata: entry added", kindAuth, withEntry("x-broker-added", "1")),
		base("clear metadata: sensitive key added in clear", kindAuth, withEntry("filename", "fox.txt")),
		base("clear metadata: entry removed", kindAuth, without("x-region")),
		base("clear metadata: key renamed", kindAuth, func(b []byte, md map[string]string) ([]byte, map[string]string) {
			md["X-Region"] = md["x-region"]
			delete(md, "x-region")
			return b, md
		}),
		base("reserved entry added", kindMalformed, withEntry("pubcrypt-extra", "1")),
		base("reserved entry with the header key's prefix added", kindMalformed, withEntry("pubcryptx", "1")),
		base("header entry missing", kindMalformed, without(HeaderKey)),
		base("dek entry missing", kindMalformed, without(DEKKey)),
		{name: "reserved entry only", key: key, body: []byte("x"), md: map[string]string{"pubcrypt-v2": "x"}, kind: kindMalformed},
		base("header: empty", kindMalformed, withHeader("")),
		base("header: version v2", kindMalformed, withHeader(strings.Replace(header, "v1;", "v2;", 1))),
		base("header: version V1", kindMalformed, withHeader(strings.Replace(header, "v1;", "V1;", 1))),
		base("header: version only", kindMalformed, withHeader("v1")),
		base("header: alg A128GCM", kindMalformed, withHeader(strings.Replace(header, "A256GCM", "A128GCM", 1))),
		base("header: alg lower case", kindMalformed, withHeader(strings.Replace(header, "A256GCM", "a256gcm", 1))),
		base("header: fields reordered", kindMalformed, withHeader("v1;alg=A256GCM;n="+nonceText+";kid=orders;m=1")),
		base("header: alg missing", kindMalformed, withHeader(strings.Replace(header, "alg=A256GCM;", "", 1))),
		base("header: nonce missing", kindMalformed, withHeader("v1;alg=A256GCM;kid=orders")),
		base("header: duplicate m", kindMalformed, withHeader(header+";m=1")),
		base("header: duplicate kid", kindMalformed, withHeader(strings.Replace(header, "kid=orders;", "kid=orders;kid=orders;", 1))),
		base("header: unknown field", kindMalformed, withHeader(header+";x=1")),
		base("header: m=0", kindMalformed, withHeader(strings.TrimSuffix(header, ";m=1")+";m=0")),
		base("header: trailing semicolon", kindMalformed, withHeader(header+";")),
		base("header: leading space", kindMalformed, withHeader(" "+header)),
		base("header: trailing space", kindMalformed, withHeader(header+" ")),
		base("header: space after semicolon", kindMalformed, withHeader(strings.Replace(header, ";kid", "; kid", 1))),
		base("header: kid empty", kindMalformed, withHeader(strings.Replace(header, "kid=orders", "kid=", 1))),
		base("header: kid with slash", kindMalformed, withHeader(strings.Replace(header, "kid=orders", "kid=ord/ers", 1))),
		base("header: kid with non-ASCII", kindMalformed, withHeader(strings.Replace(header, "kid=orders", "kid=ordérs", 1))),
		base("header: kid of 129 characters", kindMalformed, withHeader(strings.Replace(header, "kid=orders", "kid="+longKID, 1))),
		base("header: nonce of 15 characters", kindMalformed, withHeader(strings.Replace(header, nonceText, nonceText[1:], 1))),
		base("header: nonce of 17 characters", kindMalformed, withHeader(strings.Replace(header, nonceText, "A"+nonceText, 1))),
		base("header: nonce with padding", kindMalformed, withHeader(strings.Replace(header, nonceText, nonceText+"==", 1))),
		base("header: nonce in standard base64 alphabet", kindMalformed, withHeader(strings.Replace(header, nonceText, "AAAAAAAAAAAAAA+/", 1))),
		base("header: nonce with a line break", kindMalformed, withHeader(strings.Replace(header, nonceText, nonceText[:8]+"\n"+nonceText[9:], 1))),
		base("header: nonce hex instead of base64url", kindMalformed, withHeader(strings.Replace(header, nonceText, "00000000000000000000004d", 1))),
		base("dek: empty", kindMalformed, withEntry(DEKKey, "")),
		base("dek: 1025 bytes", kindMalformed, withEntry(DEKKey, strings.Repeat("A", MaxValueLen+1))),
		base("dek: line break", kindMalformed, withEntry(DEKKey, wrapped+"\n")),
		base("dek: non-ASCII", kindMalformed, withEntry(DEKKey, wrapped+"é")),
		badBlock("count 0", append(block(), "body"...)),
		badBlock("empty plaintext", []byte{}),
		badBlock("count larger than the entries", append(binary.BigEndian.AppendUint32(nil, 2), wire.AppendString(wire.AppendString(nil, "a"), "b")...)),
		badBlock("key length past the end", append(binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, 1), 100), "abcdefgh"...)),
		badBlock("keys out of order", block("b", "1", "a", "2")),
		badBlock("duplicate key", block("a", "1", "a", "2")),
		badBlock("reserved key", block("pubcrypt-x", "1")),
		badBlock("key also in clear metadata", block("content-type", "text/html")),
		badBlock("value not UTF-8", block("filename", "\xff\xfe")),
	}
}

// buildAD returns the associated data of a message, as Seal and Open build it.
func buildAD(header, wrapped string, keys []string, md map[string]string) []byte {
	return appendAD(nil, header, wrapped, entriesOf(keys, md))
}

// entriesOf lists the entries of md named by keys, in that order.
func entriesOf(keys []string, md map[string]string) []entry {
	out := make([]entry, len(keys))
	for i, k := range keys {
		out[i] = entry{k, md[k]}
	}
	return out
}

// clearKeys lists the keys of md that the associated data covers, sorted (clearEntries).
func clearKeys(keys []string, md map[string]string) []string {
	for _, e := range clearEntries(nil, md) {
		keys = append(keys, e.k)
	}
	return keys
}
