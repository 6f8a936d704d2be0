package codec_test

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"maps"
	"os"
	"slices"
	"strings"
	"testing"

	"gocloud.dev/pubsub"

	"github.com/pubcrypt/pubcrypt/internal/codec"
	"github.com/pubcrypt/pubcrypt/internal/envelope"
	"github.com/pubcrypt/pubcrypt/internal/wire"
	"github.com/pubcrypt/pubcrypt/keyring"
)

var updateRecordKeys = flag.Bool("update", false, "regenerate "+recordKeyVectorsPath+" against the test's Vault")

const recordKeyVectorsPath = "../../testdata/envelope/recordkey.json"

// recordKeyFile is the layout of testdata/envelope/recordkey.json (docs/FORMAT.md section
// 3.2). Byte strings are lower-case hex; metadata values are text.
type recordKeyFile struct {
	Format  string   `json:"format"`
	Comment []string `json:"comment"`
	// VaultKey is the deterministic key as `vault read transit/backup/NAME` gives it (the
	// key was created exportable with allow_plaintext_backup): `vault write
	// transit/restore/NAME backup=...` puts it into any Vault.
	VaultKey struct {
		Name   string `json:"name"`
		Backup string `json:"backup"`
	} `json:"vault_key"`
	DataKey  string            `json:"data_key"`
	KeyID    string            `json:"key_id"`
	Wrapped  string            `json:"wrapped"`
	Seq      uint64            `json:"seq,string"`
	Positive []recordKeyCase   `json:"positive"`
	Negative []recordKeyNoGood `json:"negative"`
}

type recordKeyCase struct {
	Name     string            `json:"name"`
	Entry    string            `json:"entry"`
	Field    string            `json:"field,omitempty"` // the key is read from the body here
	Body     string            `json:"body"`
	Metadata map[string]string `json:"metadata"`
	// The plaintext key, KeyCtx, and what the key service returned for them.
	Key        string `json:"key"`
	KeyContext string `json:"key_context"`
	RecordKey  string `json:"record_key"`
	Flag       string `json:"flag"`
	// The sealed message: header, associated data (section 8), body, metadata.
	Header         string            `json:"header"`
	AssociatedData string            `json:"associated_data"`
	BodyOut        string            `json:"body_out"`
	MetadataOut    map[string]string `json:"metadata_out"`
	// What a receiver gives the application.
	MetadataOpened map[string]string `json:"metadata_opened"`
}

type recordKeyNoGood struct {
	Name     string            `json:"name"`
	Body     string            `json:"body"`
	Metadata map[string]string `json:"metadata"`
	Error    string            `json:"error"` // auth or malformed
}

// fixedDataKey is the test's Vault for everything but data keys, which are the vector's:
// deterministic encryption is the real server's, under the restored key.
type fixedDataKey struct {
	*keyring.Vault
	key          []byte
	kid, wrapped string
}

func (f fixedDataKey) GenerateDataKey(context.Context) (*keyring.DataKey, error) {
	return &keyring.DataKey{Plaintext: bytes.Clone(f.key), Wrapped: f.wrapped, KeyID: f.kid, Version: 1}, nil
}

func (f fixedDataKey) UnwrapDataKey(context.Context, string, string) ([]byte, error) {
	return bytes.Clone(f.key), nil
}

var recordKeyInputs = []struct {
	name, entry, field, key, body string
	md                            map[string]string
}{
	{"entry", "user", "", "customer-42", "hello, world\n", map[string]string{"content-type": "text/plain"}},
	{"same key, another message: the same record key", "user", "", "customer-42", `{"amount":12}`, nil},
	{"same key under another entry: another record key", "account", "", "customer-42", "hello, world\n", nil},
	{"UTF-8 key", "user", "", "Zoë", "x", map[string]string{"trace": "1"}},
	{"key from a JSON field", "user", "user.id", "7", `{"user":{"id":7},"amount":3}`, nil},
}

// TestRecordKeyVectors checks testdata/envelope/recordkey.json against the real Vault of
// this package: the recorded deterministic key is restored into it, each positive case is
// sealed by the codec and must give exactly the recorded record key, flag, header and
// message, whose associated data is section 8's over the clear entries (flag included); it
// opens with AES-GCM under the data key and that associated data, and through the codec
// to the recorded metadata with the plaintext key. Each negative case must fail as
// recorded. With -update the file is written anew from a new key.
func TestRecordKeyVectors(t *testing.T) {
	ctx := context.Background()
	if *updateRecordKeys {
		writeRecordKeyVectors(t)
	}
	raw, err := os.ReadFile(recordKeyVectorsPath)
	if err != nil {
		t.Fatal(err)
	}
	var vf recordKeyFile
	if err := json.Unmarshal(raw, &vf); err != nil {
		t.Fatal(err)
	}
	c, err := vaultServer.Client()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Logical().WriteWithContext(ctx, "transit/restore/"+vf.VaultKey.Name, map[string]any{"backup": vf.VaultKey.Backup, "force": true}); err != nil {
		t.Fatalf("restore the vectors' key: %v", err)
	}
	kr := fixedDataKey{Vault: newVault(t), key: unhexT(t, vf.DataKey), kid: vf.KeyID, wrapped: vf.Wrapped}
	for _, v := range vf.Positive {
		t.Run(v.Name, func(t *testing.T) {
			out := sealRecordKey(t, kr, vf.VaultKey.Name, v.Entry, v.Field, v.Body, v.Metadata)
			if got := out.Metadata[v.Entry]; got != v.RecordKey {
				t.Fatalf("record key %q, want %q", got, v.RecordKey)
			}
			if got := out.Metadata[wire.RecordKeyFlag]; got != v.Flag || got != codec.FormatKeyFlag(vf.VaultKey.Name, v.Entry) {
				t.Fatalf("flag %q, want %q", got, v.Flag)
			}
			if hex.EncodeToString(codec.KeyContext(v.Entry)) != v.KeyContext {
				t.Fatalf("KeyCtx %x, want %s", codec.KeyContext(v.Entry), v.KeyContext)
			}
			if hex.EncodeToString(out.Body) != v.BodyOut || !maps.Equal(out.Metadata, v.MetadataOut) {
				t.Fatalf("sealed message differs from the vector:\n body %x\n md %v", out.Body, out.Metadata)
			}
			ad := sectionEightAD(out.Metadata)
			if hex.EncodeToString(ad) != v.AssociatedData || out.Metadata[envelope.HeaderKey] != v.Header {
				t.Fatalf("associated data or header differ from the vector")
			}
			// Section 8 by hand: the flag and the protected key are in the AD.
			block, _ := aes.NewCipher(kr.key)
			gcm, _ := cipher.NewGCM(block)
			nonce := wire.Nonce(vf.Seq)
			pt, err := gcm.Open(nil, nonce[:], out.Body, ad)
			if err != nil {
				t.Fatalf("AES-GCM under the vector's associated data: %v", err)
			}
			if string(pt) != v.Body {
				t.Fatalf("plaintext %q, want %q", pt, v.Body)
			}
			m := &pubsub.Message{Body: unhexT(t, v.BodyOut), Metadata: maps.Clone(v.MetadataOut)}
			o, err := codec.NewOpener(codec.OpenOptions{Keyring: kr})
			if err != nil {
				t.Fatal(err)
			}
			info, err := o.Open(ctx, m)
			if err != nil {
				t.Fatalf("open: %v", err)
			}
			if string(m.Body) != v.Body || !maps.Equal(m.Metadata, v.MetadataOpened) || info.RecordKey != v.Entry || m.Metadata[v.Entry] != v.Key {
				t.Fatalf("opened: body %q metadata %v record key %q", m.Body, m.Metadata, info.RecordKey)
			}
		})
	}
	for _, v := range vf.Negative {
		t.Run("negative/"+v.Name, func(t *testing.T) {
			m := &pubsub.Message{Body: unhexT(t, v.Body), Metadata: maps.Clone(v.Metadata)}
			o, err := codec.NewOpener(codec.OpenOptions{Keyring: kr})
			if err != nil {
				t.Fatal(err)
			}
			_, err = o.Open(ctx, m)
			if got := openErrorKind(err); got != v.Error {
				t.Fatalf("error %v (%s), want %s", err, got, v.Error)
			}
			if !maps.Equal(m.Metadata, v.Metadata) || hex.EncodeToString(m.Body) != v.Body {
				t.Fatalf("a message that failed was changed")
			}
		})
	}
}

func openErrorKind(err error) string {
	switch {
	case err == nil:
		return "none"
	case errors.Is(err, envelope.ErrAuth):
		return "auth"
	case errors.Is(err, envelope.ErrMalformed):
		return "malformed"
	}
	return "other: " + err.Error()
}

// sealRecordKey seals one message with entry as its protected record key, under key.
func sealRecordKey(t *testing.T, kr fixedDataKey, key, entry, field, body string, md map[string]string) *pubsub.Message {
	t.Helper()
	rk := codec.RecordKey{Entry: entry, Key: key}
	if field != "" {
		rk.Field = strings.Split(field, ".")
	}
	s, err := codec.NewSealer(codec.SealOptions{Keyring: kr, RecordKey: rk})
	if err != nil {
		t.Fatal(err)
	}
	out, errs, err := s.Seal(context.Background(), []*pubsub.Message{{Body: []byte(body), Metadata: md}}, nil)
	if err == nil && errs != nil {
		err = errs[0]
	}
	if err != nil {
		t.Fatalf("seal: %v", err)
	}
	return out[0]
}

// sectionEightAD is FORMAT.md section 8's associated data of a sealed message.
func sectionEightAD(md map[string]string) []byte {
	lp := func(b []byte, s string) []byte {
		b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
		return append(b, s...)
	}
	ad := append([]byte("pubcrypt/v1"), 0)
	ad = lp(ad, md[envelope.HeaderKey])
	ad = lp(ad, md[envelope.DEKKey])
	var keys []string
	for k := range md {
		if k != envelope.HeaderKey && k != envelope.DEKKey {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	ad = binary.BigEndian.AppendUint32(ad, uint32(len(keys)))
	for _, k := range keys {
		ad = lp(lp(ad, k), md[k])
	}
	return ad
}

func unhexT(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// writeRecordKeyVectors makes a new exportable deterministic key in the test's Vault,
// seals the inputs under it and writes the file.
func writeRecordKeyVectors(t *testing.T) {
	ctx := context.Background()
	const name = "pubcrypt-recordkey-vectors"
	c, err := vaultServer.Client()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Logical().WriteWithContext(ctx, "transit/keys/"+name, map[string]any{
		"type": "aes256-gcm96", "derived": true, "convergent_encryption": true, "exportable": true, "allow_plaintext_backup": true,
	}); err != nil {
		t.Fatal(err)
	}
	backup, err := c.Logical().ReadWithContext(ctx, "transit/backup/"+name)
	if err != nil || backup == nil {
		t.Fatalf("backup: %v", err)
	}
	var vf recordKeyFile
	vf.Format = "pubcrypt protected record keys (docs/FORMAT.md section 3.2), envelope version 1"
	vf.Comment = []string{
		"Regenerate: go test ./internal/codec -run TestRecordKeyVectors -update (needs PUBCRYPT_VAULT_BIN).",
		"vault_key.backup is the deterministic key as transit/backup gives it; restore it with transit/restore to check record_key.",
		"Byte strings are lower-case hex. record_key = Vault Transit encrypt(vault_key, key, context = key_context); flag = v1;dk=NAME;e=ENTRY.",
		"The message is sealed as FORMAT.md section 9 with data_key, key_id, wrapped and seq, the flag and the protected key being clear entries.",
	}
	vf.VaultKey.Name = name
	vf.VaultKey.Backup, _ = backup.Data["backup"].(string)
	dataKey := make([]byte, 32)
	for i := range dataKey {
		dataKey[i] = byte(i)
	}
	vf.DataKey, vf.KeyID, vf.Wrapped, vf.Seq = hex.EncodeToString(dataKey), "payroll", "vault:v1:c2FtcGxlIHdyYXBwZWQga2V5", 0
	kr := fixedDataKey{Vault: newVault(t), key: dataKey, kid: vf.KeyID, wrapped: vf.Wrapped}
	for _, in := range recordKeyInputs {
		md := maps.Clone(in.md)
		if md == nil {
			md = map[string]string{}
		}
		if in.field == "" {
			md[in.entry] = in.key
		}
		out := sealRecordKey(t, kr, name, in.entry, in.field, in.body, md)
		opened := maps.Clone(md)
		opened[in.entry] = in.key
		vf.Positive = append(vf.Positive, recordKeyCase{
			Name: in.name, Entry: in.entry, Field: in.field, Body: in.body, Metadata: md,
			Key: in.key, KeyContext: hex.EncodeToString(codec.KeyContext(in.entry)),
			RecordKey: out.Metadata[in.entry], Flag: out.Metadata[wire.RecordKeyFlag],
			Header: out.Metadata[envelope.HeaderKey], AssociatedData: hex.EncodeToString(sectionEightAD(out.Metadata)),
			BodyOut: hex.EncodeToString(out.Body), MetadataOut: out.Metadata, MetadataOpened: opened,
		})
	}
	// Negative cases, from the first positive one: changed on the way (auth), or sealed
	// by a sender that does not follow section 3.2 (malformed, authenticated).
	p := vf.Positive[0]
	changed := func(name string, f func(md map[string]string)) {
		md := maps.Clone(p.MetadataOut)
		f(md)
		vf.Negative = append(vf.Negative, recordKeyNoGood{Name: name, Body: p.BodyOut, Metadata: md, Error: "auth"})
	}
	changed("a byte of the record key flipped", func(md map[string]string) {
		b := []byte(md[p.Entry])
		b[len(b)/2] ^= 0x01
		md[p.Entry] = string(b)
	})
	changed("record key missing (a receiver without key_name)", func(md map[string]string) { delete(md, p.Entry) })
	changed("flag removed", func(md map[string]string) { delete(md, wire.RecordKeyFlag) })
	changed("flag names another entry", func(md map[string]string) { md[wire.RecordKeyFlag] = codec.FormatKeyFlag(name, "content-type") })
	changed("record key of another message under another entry", func(md map[string]string) { md[p.Entry] = vf.Positive[2].RecordKey })
	aead := func() cipher.AEAD {
		block, _ := aes.NewCipher(dataKey)
		g, _ := cipher.NewGCM(block)
		return g
	}()
	resealed := func(name string, f func(md map[string]string)) {
		md := maps.Clone(p.Metadata)
		md[p.Entry] = p.RecordKey
		md[wire.RecordKeyFlag] = p.Flag
		f(md)
		body, out, err := envelope.Seal(envelope.SealInput{AEAD: aead, KeyID: vf.KeyID, Wrapped: vf.Wrapped, Seq: 1, Body: []byte(p.Body), Metadata: md})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		vf.Negative = append(vf.Negative, recordKeyNoGood{Name: name, Body: hex.EncodeToString(body), Metadata: out, Error: "malformed"})
	}
	resealed("flag of another version", func(md map[string]string) { md[wire.RecordKeyFlag] = "v2;dk=" + name + ";e=" + p.Entry })
	resealed("flag without an entry", func(md map[string]string) { md[wire.RecordKeyFlag] = "v1;dk=" + name })
	resealed("flag naming a reserved entry", func(md map[string]string) { md[wire.RecordKeyFlag] = codec.FormatKeyFlag(name, "pubcrypt-dek") })
	resealed("flag naming an entry the message lacks", func(md map[string]string) { md[wire.RecordKeyFlag] = codec.FormatKeyFlag(name, "account") })
	resealed("record key not a ciphertext", func(md map[string]string) { md[p.Entry] = p.Key })
	b, err := json.MarshalIndent(vf, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(recordKeyVectorsPath, append(b, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
}
