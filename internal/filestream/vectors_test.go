package filestream

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"maps"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/pubcrypt/pubcrypt/internal/wire"
	"github.com/pubcrypt/pubcrypt/keyring"
)

var update = flag.Bool("update", false, "regenerate "+vectorsPath)

const vectorsPath = "../../testdata/filestream/v1.json"

// vectorFile is the layout of testdata/filestream/v1.json (docs/FILES.md, "Test
// vectors"). Byte strings are lower-case hex; 64-bit numbers are decimal strings.
type vectorFile struct {
	Format   string           `json:"format"`
	Comment  []string         `json:"comment"`
	Positive []positiveVector `json:"positive"`
	Negative []negativeVector `json:"negative"`
}

type positiveVector struct {
	Name       string `json:"name"`
	Key        string `json:"key"`
	KeyID      string `json:"key_id"`
	Wrapped    string `json:"wrapped"`
	TransferID string `json:"transfer_id"`
	ChunkSize  uint32 `json:"chunk_size"`
	FileName   string `json:"file_name"`
	Size       uint64 `json:"size,string"`
	Mode       uint32 `json:"mode"`
	MTime      int64  `json:"mtime,string"`
	Content    string `json:"content"`

	Header   string          `json:"header"`
	Messages []vectorMessage `json:"messages"`
}

type vectorMessage struct {
	Index     uint64            `json:"index,string"`
	Final     bool              `json:"final"`
	Nonce     string            `json:"nonce"`
	AD        string            `json:"ad"`
	Plaintext string            `json:"plaintext"`
	Body      string            `json:"body"`
	Metadata  map[string]string `json:"metadata"`
}

// rawMessage is a message as received: what negative vectors hold.
type rawMessage struct {
	Body     string            `json:"body"`
	Metadata map[string]string `json:"metadata"`
}

type negativeVector struct {
	Name     string       `json:"name"`
	Key      string       `json:"key"`
	KeyID    string       `json:"key_id"`
	Wrapped  string       `json:"wrapped"`
	Messages []rawMessage `json:"messages"`
	Error    string       `json:"error"`
	At       int          `json:"at"`
}

// Error kinds as the vectors name them (docs/FILES.md, "Receiving").
const (
	kindMalformed = "malformed"
	kindAuth      = "auth"
	kindOrder     = "order"
	kindUnknown   = "unknown-transfer"
	kindName      = "unsafe-name"
	kindKey       = "key-service"
	kindEnd       = "incomplete"
)

func errorKind(err error) string {
	var ke *keyring.Error
	switch {
	case err == nil:
		return "none"
	case errors.Is(err, ErrMalformed):
		return kindMalformed
	case errors.Is(err, ErrAuth):
		return kindAuth
	case errors.Is(err, ErrOrder):
		return kindOrder
	case errors.Is(err, ErrUnknownTransfer):
		return kindUnknown
	case errors.Is(err, ErrUnsafeName):
		return kindName
	case errors.Is(err, ErrIncomplete):
		return kindEnd
	case errors.As(err, &ke):
		return kindKey
	}
	return "other: " + err.Error()
}

// vectorKeyring unwraps one wrapped key under one key ID.
type vectorKeyring struct {
	kid, wrapped string
	key          []byte
}

func (k *vectorKeyring) GenerateDataKey(ctx context.Context) (*keyring.DataKey, error) {
	return nil, errors.New("vector keyring: generate")
}

func (k *vectorKeyring) UnwrapDataKey(ctx context.Context, keyID, wrapped string) ([]byte, error) {
	if keyID != k.kid {
		return nil, &keyring.Error{Op: "unwrap data key", KeyID: keyID, Kind: keyring.ErrKeyNotFound}
	}
	if wrapped != k.wrapped {
		return nil, &keyring.Error{Op: "unwrap data key", KeyID: keyID, Kind: keyring.ErrInvalidWrappedKey}
	}
	return bytes.Clone(k.key), nil
}

// receiveVector runs a receiver over msgs and returns the file (if one completed) and the
// first error with the index of the message that caused it (len(msgs) when the messages
// ran out with the transfer still in progress: Expire gives it up, ErrIncomplete).
func receiveVector(t *testing.T, kr keyring.Keyring, msgs []msg) (name string, content []byte, at int, err error) {
	t.Helper()
	dir := t.TempDir()
	r, err := NewReceiver(kr, dir, ReceiveOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for i, m := range msgs {
		d, err := r.Handle(context.Background(), m.body, m.md)
		if err != nil {
			r.Expire(0)
			if got := dirEntries(t, dir); len(got) != 0 {
				t.Fatalf("destination holds %q after an error", got)
			}
			return "", nil, i, err
		}
		if d != nil {
			if i != len(msgs)-1 {
				t.Fatalf("file completed at message %d of %d", i, len(msgs))
			}
			return d.Name, readFile(t, dir, d.Name), i, r.Expire(0)
		}
	}
	return "", nil, len(msgs), r.Expire(0)
}

// redelivered names the negative vectors that a receiver which keeps its partial state
// (docs/FILES.md, section 10.1) accepts: a chunk delivered again, byte for byte, is a
// redelivery, not an error. The vectors stay as they are, the rule of a receiver
// without that state; this receiver must give back the worked example's file instead.
var redelivered = map[string]bool{"chunk 1 duplicated": true}

func TestVectors(t *testing.T) {
	if *update {
		f := generateVectors(t)
		data, err := json.MarshalIndent(f, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll("../../testdata/filestream", 0o755); err != nil {
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
			kr := &vectorKeyring{kid: v.KeyID, wrapped: v.Wrapped, key: mustHex(t, v.Key)}
			name, content, at, err := receiveVector(t, kr, fromVector(t, v.Messages))
			if redelivered[v.Name] {
				ex := f.Positive[0]
				if err != nil || name != ex.FileName || hex.EncodeToString(content) != ex.Content {
					t.Fatalf("redelivered chunk: got %q %x, %v; want %q", name, content, err, ex.FileName)
				}
				return
			}
			if got := errorKind(err); got != v.Error || at != v.At {
				t.Fatalf("got %s (%v) at message %d, want %s at %d", got, err, at, v.Error, v.At)
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

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatalf("bad hex %q: %v", s, err)
	}
	return b
}

func fromVector(t testing.TB, vm []rawMessage) []msg {
	var msgs []msg
	for _, m := range vm {
		msgs = append(msgs, msg{mustHex(t, m.Body), m.Metadata})
	}
	return msgs
}

func raw(vm []vectorMessage) []rawMessage {
	var r []rawMessage
	for _, m := range vm {
		r = append(r, rawMessage{m.Body, m.Metadata})
	}
	return r
}

func checkPositive(t *testing.T, v positiveVector) {
	key, content := mustHex(t, v.Key), mustHex(t, v.Content)
	var id transferID
	copy(id[:], mustHex(t, v.TransferID))
	h := fileHeader{size: v.Size, chunkSize: v.ChunkSize, mode: v.Mode, mtime: v.MTime, name: v.FileName}
	if got := hex.EncodeToString(appendHeader(nil, h)); got != v.Header {
		t.Errorf("header:\n got %s\nwant %s", got, v.Header)
	}

	// Sending the inputs gives exactly the messages.
	var rec recorder
	dk := &keyring.DataKey{Plaintext: key, Wrapped: v.Wrapped, KeyID: v.KeyID}
	opts := SendOptions{ChunkSize: int(v.ChunkSize)}
	if err := checkSend(&h, &opts); err != nil {
		t.Fatal(err)
	}
	if _, err := sendWith(context.Background(), dk, id, h, bytes.NewReader(content), rec.send, opts); err != nil {
		t.Fatal(err)
	}
	if len(rec.msgs) != len(v.Messages) {
		t.Fatalf("sent %d messages, want %d", len(rec.msgs), len(v.Messages))
	}
	aead := newAEAD(key)
	for i, want := range v.Messages {
		got := rec.msgs[i]
		if hex.EncodeToString(got.body) != want.Body || !maps.Equal(got.md, want.Metadata) {
			t.Errorf("message %d:\n got %x %q\nwant %s %q", i, got.body, got.md, want.Body, want.Metadata)
		}
		// Intermediate values, from the spec's definitions.
		nonce := wire.Nonce(want.Index)
		ad := appendAD(nil, id, want.Index, want.Final, v.KeyID, v.Wrapped)
		if hex.EncodeToString(nonce[:]) != want.Nonce || hex.EncodeToString(ad) != want.AD {
			t.Errorf("message %d: nonce %x ad %x", i, nonce, ad)
		}
		pt, err := aead.Open(nil, nonce[:], mustHex(t, want.Body), ad)
		if err != nil || hex.EncodeToString(pt) != want.Plaintext {
			t.Errorf("message %d: raw GCM open with the vector's nonce and AD: %x, %v", i, pt, err)
		}
	}

	// Receiving the messages gives back the file.
	kr := &vectorKeyring{kid: v.KeyID, wrapped: v.Wrapped, key: key}
	name, got, _, err := receiveVector(t, kr, fromVector(t, raw(v.Messages)))
	if err != nil || name != v.FileName || !bytes.Equal(got, content) {
		t.Fatalf("received %q %x, %v; want %q %s", name, got, err, v.FileName, v.Content)
	}
}

// TestFilesDocExample keeps the worked example in docs/FILES.md in step with the vectors.
func TestFilesDocExample(t *testing.T) {
	doc, err := os.ReadFile("../../docs/FILES.md")
	if err != nil {
		t.Fatal(err)
	}
	squeezed := strings.Join(strings.Fields(string(doc)), "")
	for _, v := range readVectors(t).Positive {
		if v.Name != workedExample {
			continue
		}
		want := map[string]string{"key": v.Key, "transfer_id": v.TransferID, "header": v.Header}
		for i, m := range v.Messages {
			for field, val := range map[string]string{"nonce": m.Nonce, "ad": m.AD, "plaintext": m.Plaintext, "body": m.Body, "pubcrypt-file": m.Metadata[ChunkKey]} {
				want[field+" of message "+string(rune('0'+i))] = val
			}
		}
		for name, val := range want {
			if !strings.Contains(squeezed, val) {
				t.Errorf("docs/FILES.md worked example: %s %s not found", name, val)
			}
		}
		return
	}
	t.Fatalf("vector %q not found", workedExample)
}

const workedExample = "worked example"

// The inputs of the vectors. Outputs come from this implementation, with -update.

type positiveCase struct {
	name    string
	key     []byte
	kid     string
	wrapped string
	id      transferID
	chunk   uint32
	h       fileHeader
	content []byte
}

func seqBytes(n int, from byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = from + byte(i)
	}
	return b
}

func positiveCases() []positiveCase {
	vaultWrapped := "vault:v1:" + strings.Repeat("QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo", 2) + "0123456789"
	example := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC).UnixNano()
	return []positiveCase{
		{
			name: workedExample, key: seqBytes(32, 0), kid: "payroll", wrapped: "vault:v1:c2FtcGxlIHdyYXBwZWQga2V5",
			id: transferID(seqBytes(16, 0xa0)), chunk: 8,
			h: fileHeader{name: "hello.txt", mode: 0o644, mtime: example}, content: []byte("hello, world\n"),
		},
		{
			name: "empty file, default chunk size, no mode or time", key: seqBytes(32, 0x20), kid: "files", wrapped: vaultWrapped,
			id: transferID(seqBytes(16, 0x10)), chunk: DefaultChunkSize, h: fileHeader{name: "empty"}, content: []byte{},
		},
		{
			name: "non-ASCII name, last chunk short", key: seqBytes(32, 0x40), kid: "files", wrapped: vaultWrapped,
			id: transferID(seqBytes(16, 0x30)), chunk: 32,
			h:       fileHeader{name: "résumé 履歴書 ✓.pdf", mode: 0o600, mtime: example + 999_999_999},
			content: seqBytes(100, 0x80),
		},
		{
			name: "size a multiple of the chunk size", key: seqBytes(32, 0x60), kid: "files", wrapped: vaultWrapped,
			id: transferID(seqBytes(16, 0x50)), chunk: 16, h: fileHeader{name: "blocks.bin", mode: 0o755, mtime: -1},
			content: seqBytes(64, 0),
		},
		{
			name: "longest name and key ID, one-byte chunks, longest wrapped key", key: seqBytes(32, 0x80),
			kid:     strings.Repeat("k", wire.MaxKeyIDLen),
			wrapped: "vault:v9:" + strings.Repeat("A", wire.MaxValueLen-len("vault:v9:")),
			id:      transferID(seqBytes(16, 0x70)), chunk: 1,
			h: fileHeader{name: strings.Repeat("n", maxNameLen), mode: 0o777, mtime: 1}, content: []byte("abc"),
		},
	}
}

func generateVectors(t *testing.T) *vectorFile {
	f := &vectorFile{
		Format: "pubcrypt-file v1",
		Comment: []string{
			"Test vectors for docs/FILES.md. Byte strings are lower-case hex; size, mtime and index are decimal strings.",
			"positive: sending the file (file_name, size, mode, mtime, content) as transfer transfer_id under data key key",
			"(key_id, wrapped) with chunk_size must give exactly messages (body, metadata); header, nonce, ad and plaintext",
			"are intermediate values. Receiving the messages in order must give back the file.",
			"negative: receiving messages in order, with a key service that unwraps wrapped under key_id to key and refuses",
			"anything else, must produce no file, and the first error must be of kind error at message at (at = the number",
			"of messages: the transfer is incomplete when the messages run out). Kinds: malformed, auth, order,",
			"unknown-transfer, unsafe-name, key-service, incomplete.",
		},
	}
	for _, c := range positiveCases() {
		f.Positive = append(f.Positive, sealVector(t, c))
	}
	for _, c := range negativeCases(t, f.Positive[0]) {
		kr := &vectorKeyring{kid: c.v.KeyID, wrapped: c.v.Wrapped, key: mustHex(t, c.v.Key)}
		_, _, at, err := receiveVector(t, kr, fromVector(t, c.v.Messages))
		if got := errorKind(err); got != c.v.Error || at != c.v.At {
			t.Fatalf("negative vector %q: got %s (%v) at %d, want %s at %d", c.v.Name, got, err, at, c.v.Error, c.v.At)
		}
		f.Negative = append(f.Negative, c.v)
	}
	return f
}

func sealVector(t *testing.T, c positiveCase) positiveVector {
	h := c.h
	h.size, h.chunkSize = uint64(len(c.content)), c.chunk
	var rec recorder
	dk := &keyring.DataKey{Plaintext: c.key, Wrapped: c.wrapped, KeyID: c.kid}
	opts := SendOptions{ChunkSize: int(c.chunk)}
	if err := checkSend(&h, &opts); err != nil {
		t.Fatalf("vector %q: %v", c.name, err)
	}
	if _, err := sendWith(context.Background(), dk, c.id, h, bytes.NewReader(c.content), rec.send, opts); err != nil {
		t.Fatalf("vector %q: %v", c.name, err)
	}
	v := positiveVector{
		Name: c.name, Key: hex.EncodeToString(c.key), KeyID: c.kid, Wrapped: c.wrapped,
		TransferID: hex.EncodeToString(c.id[:]), ChunkSize: c.chunk, FileName: h.name, Size: h.size,
		Mode: h.mode, MTime: h.mtime, Content: hex.EncodeToString(c.content),
		Header: hex.EncodeToString(appendHeader(nil, h)),
	}
	aead := newAEAD(c.key)
	for _, m := range rec.msgs {
		ref, _, err := parseRef(m.md[ChunkKey])
		if err != nil {
			t.Fatal(err)
		}
		nonce := wire.Nonce(ref.index)
		ad := appendAD(nil, c.id, ref.index, ref.final, c.kid, c.wrapped)
		pt, err := aead.Open(nil, nonce[:], m.body, ad)
		if err != nil {
			t.Fatal(err)
		}
		v.Messages = append(v.Messages, vectorMessage{
			Index: ref.index, Final: ref.final, Nonce: hex.EncodeToString(nonce[:]), AD: hex.EncodeToString(ad),
			Plaintext: hex.EncodeToString(pt), Body: hex.EncodeToString(m.body), Metadata: m.md,
		})
	}
	return v
}

type negativeCase struct{ v negativeVector }

// negativeCases derives failing transfers from the worked example (header + two data
// chunks), and seals others with a sender that does not follow the rules.
func negativeCases(t *testing.T, ex positiveVector) []negativeCase {
	base := func(name, kind string, at int, change func(m []rawMessage) []rawMessage) negativeCase {
		m := make([]rawMessage, len(ex.Messages))
		for i, x := range ex.Messages {
			m[i] = rawMessage{Body: x.Body, Metadata: maps.Clone(x.Metadata)}
		}
		return negativeCase{negativeVector{
			Name: name, Key: ex.Key, KeyID: ex.KeyID, Wrapped: ex.Wrapped,
			Messages: change(m), Error: kind, At: at,
		}}
	}
	setRef := func(m *rawMessage, from, to string) {
		v := m.Metadata[ChunkKey]
		if !strings.Contains(v, from) {
			t.Fatalf("%q not in %q", from, v)
		}
		m.Metadata[ChunkKey] = strings.Replace(v, from, to, 1)
	}
	flip := func(hexBody string, i int) string {
		b := mustHex(t, hexBody)
		b[i] ^= 1
		return hex.EncodeToString(b)
	}
	cases := []negativeCase{
		base("chunk 1 lost", kindOrder, 1, func(m []rawMessage) []rawMessage { return append(m[:1], m[2]) }),
		base("last chunk lost", kindEnd, 2, func(m []rawMessage) []rawMessage { return m[:2] }),
		base("chunk 0 lost", kindUnknown, 0, func(m []rawMessage) []rawMessage { return m[1:] }),
		base("chunk 1 duplicated", kindOrder, 2, func(m []rawMessage) []rawMessage { return append(m[:2], m[1], m[2]) }),
		base("chunks 1 and 2 swapped", kindOrder, 1, func(m []rawMessage) []rawMessage { m[1], m[2] = m[2], m[1]; return m }),
		base("body of chunk 1 changed", kindAuth, 1, func(m []rawMessage) []rawMessage { m[1].Body = flip(m[1].Body, 0); return m }),
		base("tag of chunk 0 changed", kindAuth, 0, func(m []rawMessage) []rawMessage {
			m[0].Body = flip(m[0].Body, len(m[0].Body)/2-1)
			return m
		}),
		base("final flag set on chunk 1", kindAuth, 1, func(m []rawMessage) []rawMessage { setRef(&m[1], ";f=0", ";f=1"); return m }),
		base("final flag cleared on the last chunk", kindAuth, 2, func(m []rawMessage) []rawMessage { setRef(&m[2], ";f=1", ";f=0"); return m }),
		base("chunk 2 relabelled as chunk 1", kindAuth, 1, func(m []rawMessage) []rawMessage {
			m[1] = m[2]
			m[1].Metadata = maps.Clone(m[2].Metadata)
			setRef(&m[1], ";i=2;f=1", ";i=1;f=0")
			return m
		}),
		base("transfer ID of chunk 1 changed", kindUnknown, 1, func(m []rawMessage) []rawMessage { setRef(&m[1], "id=o", "id=p"); return m }),
		base("key ID of chunk 1 changed", kindAuth, 1, func(m []rawMessage) []rawMessage { setRef(&m[1], "kid=payroll", "kid=payrolL"); return m }),
		base("key ID of chunk 0 changed", kindKey, 0, func(m []rawMessage) []rawMessage { setRef(&m[0], "kid=payroll", "kid=payrolL"); return m }),
		base("wrapped key of chunk 1 changed", kindAuth, 1, func(m []rawMessage) []rawMessage {
			m[1].Metadata[DEKKey] = strings.Replace(m[1].Metadata[DEKKey], "v1", "v2", 1)
			return m
		}),
		base("unknown version", kindMalformed, 0, func(m []rawMessage) []rawMessage { setRef(&m[0], "v1;", "v2;"); return m }),
		base("index with a leading zero", kindMalformed, 1, func(m []rawMessage) []rawMessage { setRef(&m[1], ";i=1;", ";i=01;"); return m }),
		base("transfer ID not canonical (padding bits set)", kindMalformed, 0, func(m []rawMessage) []rawMessage {
			setRef(&m[0], "rw;", "rx;")
			return m
		}),
		base("fields out of order", kindMalformed, 1, func(m []rawMessage) []rawMessage { setRef(&m[1], ";i=1;f=0", ";f=0;i=1"); return m }),
		base("other reserved entry", kindMalformed, 1, func(m []rawMessage) []rawMessage { m[1].Metadata["pubcrypt"] = "v1"; return m }),
		base("wrapped key entry missing", kindMalformed, 1, func(m []rawMessage) []rawMessage { delete(m[1].Metadata, DEKKey); return m }),
		base("body shorter than a tag", kindMalformed, 1, func(m []rawMessage) []rawMessage { m[1].Body = m[1].Body[:30]; return m }),
	}

	// A sender that breaks the rules, under the worked example's key and transfer ID.
	var id transferID
	copy(id[:], mustHex(t, ex.TransferID))
	s := &chunkSealer{aead: newAEAD(mustHex(t, ex.Key)), id: id, kid: ex.KeyID, wrapped: ex.Wrapped}
	type chunk struct {
		index uint64
		final bool
		pt    []byte
	}
	sealed := func(name, kind string, at int, chunks ...chunk) negativeCase {
		var m []rawMessage
		for _, c := range chunks {
			body := s.seal(nil, c.index, c.final, c.pt)
			m = append(m, rawMessage{Body: hex.EncodeToString(body), Metadata: s.metadata(c.index, c.final, "")})
		}
		return negativeCase{negativeVector{Name: name, Key: ex.Key, KeyID: ex.KeyID, Wrapped: ex.Wrapped, Messages: m, Error: kind, At: at}}
	}
	hdr := func(name string, size uint64, chunkSize, mode uint32) []byte {
		return appendHeader(nil, fileHeader{name: name, size: size, chunkSize: chunkSize, mode: mode})
	}
	data := []byte("hello, world\n")
	good := hdr("hello.txt", 13, 8, 0o644)
	rest := []chunk{{1, false, data[:8]}, {2, true, data[8:]}}
	withRest := func(c ...chunk) []chunk { return append(c, rest...) }
	padded := bytes.Clone(good)
	padded[len(padded)-1] = 1
	longName := bytes.Clone(good)
	binary.BigEndian.PutUint32(longName[24:], maxNameLen+1)
	cases = append(cases,
		sealed("name with a path", kindName, 0, withRest(chunk{0, false, hdr("../hello.txt", 13, 8, 0)})...),
		sealed("absolute name", kindName, 0, withRest(chunk{0, false, hdr("/etc/passwd", 13, 8, 0)})...),
		sealed("empty name", kindName, 0, withRest(chunk{0, false, hdr("", 13, 8, 0)})...),
		sealed("name ..", kindName, 0, withRest(chunk{0, false, hdr("..", 13, 8, 0)})...),
		sealed("name with a control character", kindName, 0, withRest(chunk{0, false, hdr("a\nb", 13, 8, 0)})...),
		sealed("mode with a setuid bit", kindMalformed, 0, withRest(chunk{0, false, hdr("hello.txt", 13, 8, 0o4755)})...),
		sealed("chunk size 0", kindMalformed, 0, withRest(chunk{0, false, hdr("hello.txt", 13, 0, 0)})...),
		sealed("header padding not zero", kindMalformed, 0, withRest(chunk{0, false, padded})...),
		sealed("header name length beyond the padding", kindMalformed, 0, withRest(chunk{0, false, longName})...),
		sealed("header one byte short", kindMalformed, 0, withRest(chunk{0, false, good[:len(good)-1]})...),
		sealed("header one byte long", kindMalformed, 0, withRest(chunk{0, false, append(bytes.Clone(good), 0)})...),
		sealed("chunk 0 with the final flag", kindMalformed, 0, withRest(chunk{0, true, good})...),
		sealed("size larger than the data", kindMalformed, 2, withRest(chunk{0, false, hdr("hello.txt", 14, 8, 0)})...),
		sealed("final flag on chunk 1 of 2", kindMalformed, 1, chunk{0, false, good}, chunk{1, true, data[:8]}),
		sealed("chunk 1 short", kindMalformed, 1, chunk{0, false, good}, chunk{1, false, data[:7]}, chunk{2, true, data[7:]}),
		sealed("no final flag", kindMalformed, 2, chunk{0, false, good}, chunk{1, false, data[:8]}, chunk{2, false, data[8:]}),
	)
	return cases
}
