package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/pubcrypt/pubcrypt/internal/fpe"
)

// keySize is the FF1 key length: AES-256.
const keySize = 32

// maxBatch bounds one batch_input; pubcrypt's keyring sends at most 1000 items per request.
const maxBatch = 10000

// Factory is the plugin's logical.Factory.
func Factory(ctx context.Context, conf *logical.BackendConfig) (logical.Backend, error) {
	b := newBackend()
	if err := b.Setup(ctx, conf); err != nil {
		return nil, err
	}
	return b, nil
}

type backend struct {
	*framework.Backend
	// mu serialises changes of a key entry (create, rotate, config) against each other;
	// encode and decode only read.
	mu sync.Mutex
}

func newBackend() *backend {
	b := &backend{}
	name := framework.GenericNameRegex("name")
	keyField := map[string]*framework.FieldSchema{
		"name": {Type: framework.TypeString, Description: "Name of the key."},
	}
	item := map[string]*framework.FieldSchema{
		"name":        {Type: framework.TypeString, Description: "Name of the key."},
		"value":       {Type: framework.TypeString, Description: "Digits and separators ( -./()+) to encode or decode."},
		"tweak":       {Type: framework.TypeString, Description: "Base64 of the FF1 tweak (pubcrypt: the rule path)."},
		"options":     {Type: framework.TypeString, Description: `Card options, comma-separated: "bin", "last4", "luhn".`},
		"key_version": {Type: framework.TypeInt, Description: "Key version; encode: 0 or absent for the latest; decode: required."},
		"batch_input": {Type: framework.TypeSlice, Description: "Items, each with value, tweak, options and key_version; answered in batch_results."},
	}
	b.Backend = &framework.Backend{
		Help:        "Format-preserving encryption (FF1) with keys that never leave Vault; encode and decode are separate paths.",
		BackendType: logical.TypeLogical,
		PathsSpecial: &logical.Paths{
			SealWrapStorage: []string{"keys/"},
		},
		Paths: []*framework.Path{
			{
				Pattern:         "keys/?$",
				Operations:      map[logical.Operation]framework.OperationHandler{logical.ListOperation: &framework.PathOperation{Callback: b.listKeys}},
				HelpSynopsis:    "List the keys.",
				HelpDescription: "Names only.",
			},
			{
				Pattern: "keys/" + name + "/rotate$",
				Fields:  keyField,
				Operations: map[logical.Operation]framework.OperationHandler{
					logical.UpdateOperation: &framework.PathOperation{Callback: b.rotateKey},
				},
				HelpSynopsis: "Add a key version; encode uses it from now on, older versions keep decoding.",
			},
			{
				Pattern: "keys/" + name + "/config$",
				Fields: map[string]*framework.FieldSchema{
					"name":                   {Type: framework.TypeString, Description: "Name of the key."},
					"min_decryption_version": {Type: framework.TypeInt, Description: "Oldest version encode and decode accept."},
				},
				Operations: map[logical.Operation]framework.OperationHandler{
					logical.UpdateOperation: &framework.PathOperation{Callback: b.configKey},
				},
				HelpSynopsis: "Retire old key versions.",
			},
			{
				Pattern: "keys/" + name + "$",
				Fields:  keyField,
				Operations: map[logical.Operation]framework.OperationHandler{
					logical.UpdateOperation: &framework.PathOperation{Callback: b.createKey},
					logical.CreateOperation: &framework.PathOperation{Callback: b.createKey},
					logical.ReadOperation:   &framework.PathOperation{Callback: b.readKey},
				},
				ExistenceCheck: b.keyExists,
				HelpSynopsis:   "Create a key (idempotent) or read its versions; the key bytes are never returned.",
			},
			{
				Pattern:      "encode/" + name + "$",
				Fields:       item,
				Operations:   map[logical.Operation]framework.OperationHandler{logical.UpdateOperation: &framework.PathOperation{Callback: b.crypt(false)}},
				HelpSynopsis: "Encode digits with FF1 under the key's latest (or given) version.",
			},
			{
				Pattern:      "decode/" + name + "$",
				Fields:       item,
				Operations:   map[logical.Operation]framework.OperationHandler{logical.UpdateOperation: &framework.PathOperation{Callback: b.crypt(true)}},
				HelpSynopsis: "Decode digits that encode returned, under the version it returned.",
			},
		},
	}
	return b
}

// keyEntry is a key as stored (seal-wrapped where the server supports it).
type keyEntry struct {
	Latest        int                `json:"latest_version"`
	MinDecryption int                `json:"min_decryption_version"`
	Versions      map[int]keyVersion `json:"versions"`
}

type keyVersion struct {
	Key     []byte    `json:"key"`
	Created time.Time `json:"created"`
}

func storageKey(name string) string { return "keys/" + name }

func (b *backend) getKey(ctx context.Context, s logical.Storage, name string) (*keyEntry, error) {
	se, err := s.Get(ctx, storageKey(name))
	if err != nil || se == nil {
		return nil, err
	}
	var k keyEntry
	if err := se.DecodeJSON(&k); err != nil {
		return nil, fmt.Errorf("key %q: stored entry unreadable: %w", name, err)
	}
	return &k, nil
}

func (b *backend) putKey(ctx context.Context, s logical.Storage, name string, k *keyEntry) error {
	se, err := logical.StorageEntryJSON(storageKey(name), k)
	if err != nil {
		return err
	}
	return s.Put(ctx, se)
}

// addVersion appends a fresh random key version to k.
func addVersion(k *keyEntry) error {
	key := make([]byte, keySize)
	if _, err := rand.Read(key); err != nil {
		return fmt.Errorf("generate key: %w", err)
	}
	if k.Versions == nil {
		k.Versions = map[int]keyVersion{}
	}
	k.Latest++
	k.Versions[k.Latest] = keyVersion{Key: key, Created: time.Now().UTC()}
	if k.MinDecryption == 0 {
		k.MinDecryption = 1
	}
	return nil
}

func (b *backend) keyExists(ctx context.Context, req *logical.Request, d *framework.FieldData) (bool, error) {
	k, err := b.getKey(ctx, req.Storage, d.Get("name").(string))
	return k != nil, err
}

func (b *backend) listKeys(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	names, err := req.Storage.List(ctx, "keys/")
	if err != nil {
		return nil, err
	}
	return logical.ListResponse(names), nil
}

func (b *backend) createKey(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	b.mu.Lock()
	defer b.mu.Unlock()
	k, err := b.getKey(ctx, req.Storage, name)
	if err != nil {
		return nil, err
	}
	if k == nil {
		k = &keyEntry{}
		if err := addVersion(k); err != nil {
			return nil, err
		}
		if err := b.putKey(ctx, req.Storage, name, k); err != nil {
			return nil, err
		}
	}
	return keyInfo(name, k), nil
}

func (b *backend) readKey(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	k, err := b.getKey(ctx, req.Storage, name)
	if err != nil || k == nil {
		return nil, err // nil response: 404
	}
	return keyInfo(name, k), nil
}

// keyInfo describes a key without its bytes.
func keyInfo(name string, k *keyEntry) *logical.Response {
	versions := map[string]any{}
	for v, kv := range k.Versions {
		versions[strconv.Itoa(v)] = kv.Created.Format(time.RFC3339)
	}
	return &logical.Response{Data: map[string]any{
		"name":                   name,
		"latest_version":         k.Latest,
		"min_decryption_version": k.MinDecryption,
		"versions":               versions,
		"type":                   "ff1-aes256",
	}}
}

func (b *backend) rotateKey(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	b.mu.Lock()
	defer b.mu.Unlock()
	k, err := b.getKey(ctx, req.Storage, name)
	if err != nil {
		return nil, err
	}
	if k == nil {
		return logical.ErrorResponse("key not found: %q", name), logical.ErrInvalidRequest
	}
	if err := addVersion(k); err != nil {
		return nil, err
	}
	if err := b.putKey(ctx, req.Storage, name, k); err != nil {
		return nil, err
	}
	return keyInfo(name, k), nil
}

func (b *backend) configKey(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	b.mu.Lock()
	defer b.mu.Unlock()
	k, err := b.getKey(ctx, req.Storage, name)
	if err != nil {
		return nil, err
	}
	if k == nil {
		return logical.ErrorResponse("key not found: %q", name), logical.ErrInvalidRequest
	}
	if raw, ok := d.GetOk("min_decryption_version"); ok {
		m := raw.(int)
		if m < 1 || m > k.Latest {
			return logical.ErrorResponse("min_decryption_version must be between 1 and the latest version %d", k.Latest), logical.ErrInvalidRequest
		}
		// As transit: older versions are refused, not deleted, so lowering it again
		// brings them back.
		k.MinDecryption = m
	}
	if err := b.putKey(ctx, req.Storage, name, k); err != nil {
		return nil, err
	}
	return keyInfo(name, k), nil
}

// item is one value of an encode or decode request.
type item struct {
	value, tweak, options string
	version               int
}

// crypt handles encode (decrypt false) and decode. A whole request fails for what is
// wrong with the request (no such key, malformed batch_input); an item fails alone, in
// its batch result, for its value. Errors never contain a value or a key.
func (b *backend) crypt(decrypt bool) framework.OperationFunc {
	return func(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
		name := d.Get("name").(string)
		var items []item
		raw, batch := d.GetOk("batch_input")
		if batch {
			list, _ := raw.([]any)
			if len(list) == 0 {
				return logical.ErrorResponse("batch_input is empty"), logical.ErrInvalidRequest
			}
			if len(list) > maxBatch {
				return logical.ErrorResponse("batch_input has %d items, at most %d", len(list), maxBatch), logical.ErrInvalidRequest
			}
			for i, e := range list {
				it, err := parseItem(e)
				if err != nil {
					return logical.ErrorResponse("batch_input item %d: %s", i, err), logical.ErrInvalidRequest
				}
				items = append(items, it)
			}
		} else {
			v, ok := d.GetOk("value")
			if !ok {
				return logical.ErrorResponse("missing value (or batch_input)"), logical.ErrInvalidRequest
			}
			items = []item{{value: v.(string), tweak: d.Get("tweak").(string), options: d.Get("options").(string), version: d.Get("key_version").(int)}}
		}
		k, err := b.getKey(ctx, req.Storage, name)
		if err != nil {
			return nil, err
		}
		if k == nil {
			return logical.ErrorResponse("key not found: %q", name), logical.ErrInvalidRequest
		}
		results := make([]map[string]any, len(items))
		ciphers := map[int]*fpe.FF1{} // one AES key schedule per version per request
		for i, it := range items {
			out, version, err := cryptItem(k, ciphers, it, decrypt)
			if err != nil {
				results[i] = map[string]any{"error": err.Error()}
				continue
			}
			field := "encoded_value"
			if decrypt {
				field = "decoded_value"
			}
			results[i] = map[string]any{field: out, "key_version": version}
		}
		if batch {
			return &logical.Response{Data: map[string]any{"batch_results": results}}, nil
		}
		if msg, failed := results[0]["error"]; failed {
			return logical.ErrorResponse("%s", msg), logical.ErrInvalidRequest
		}
		return &logical.Response{Data: results[0]}, nil
	}
}

func cryptItem(k *keyEntry, ciphers map[int]*fpe.FF1, it item, decrypt bool) (string, int, error) {
	version := it.version
	switch {
	case version < 0:
		return "", 0, errors.New("invalid key version: negative")
	case version == 0 && decrypt:
		return "", 0, errors.New("key_version is required to decode: FPE output does not say which version made it")
	case version == 0:
		version = k.Latest
	case version > k.Latest:
		return "", 0, fmt.Errorf("invalid key version %d: the latest is %d", version, k.Latest)
	case version < k.MinDecryption:
		return "", 0, fmt.Errorf("key version %d is too old: min_decryption_version is %d", version, k.MinDecryption)
	}
	kv, ok := k.Versions[version]
	if !ok {
		return "", 0, fmt.Errorf("invalid key version %d", version)
	}
	tweak, err := base64.StdEncoding.DecodeString(it.tweak)
	if err != nil {
		return "", 0, errors.New("tweak is not base64")
	}
	o, err := fpe.ParseCardOptions(it.options)
	if err != nil {
		return "", 0, err
	}
	ff := ciphers[version]
	if ff == nil {
		if ff, err = fpe.NewFF1(kv.Key, 10); err != nil {
			return "", 0, err
		}
		ciphers[version] = ff
	}
	var out string
	if decrypt {
		out, err = fpe.Decrypt(ff, it.value, tweak, o)
	} else {
		out, err = fpe.Encrypt(ff, it.value, tweak, o)
	}
	if err != nil {
		// internal/fpe's errors name positions and counts, never the value.
		return "", 0, err
	}
	return out, version, nil
}

// parseItem reads one batch_input element. Vault decodes the request with UseNumber, so
// key_version arrives as a json.Number, or as a string from clients that send every item
// field as text (pubcrypt's keyring does).
func parseItem(e any) (item, error) {
	m, ok := e.(map[string]any)
	if !ok {
		return item{}, errors.New("not an object")
	}
	var it item
	for k, v := range m {
		switch k {
		case "value", "tweak", "options":
			s, ok := v.(string)
			if !ok {
				return item{}, fmt.Errorf("%s is not a string", k)
			}
			switch k {
			case "value":
				it.value = s
			case "tweak":
				it.tweak = s
			default:
				it.options = s
			}
		case "key_version":
			n, err := intOf(v)
			if err != nil {
				return item{}, fmt.Errorf("key_version: %w", err)
			}
			it.version = n
		case "reference", "transformation":
			// Transform's item fields: accepted and ignored, so a Transform client works.
		default:
			return item{}, fmt.Errorf("unknown field %.40q", k)
		}
	}
	if _, ok := m["value"]; !ok {
		return item{}, errors.New("missing value")
	}
	return it, nil
}

func intOf(v any) (int, error) {
	var s string
	switch x := v.(type) {
	case json.Number:
		s = x.String()
	case string:
		s = x
	case float64:
		if x != float64(int(x)) {
			return 0, errors.New("not an integer")
		}
		return int(x), nil
	case int:
		return x, nil
	default:
		return 0, errors.New("not a number")
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0, errors.New("not an integer")
	}
	return n, nil
}
