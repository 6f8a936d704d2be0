package keyring

// Field-level encryption through Vault Transit: a field's value is sent to Vault and only
// its ciphertext travels in the message, unlike data keys, where Vault sees one request
// per key and the data is encrypted locally. Every protected field of a message (or of a
// batch of messages) goes to Vault in one batch_input request, so a message costs one
// round trip whatever its number of fields.
//
// The three field modes map onto Transit as follows:
//
//   - transit: randomized AEAD encryption, with the message ID and the field path as
//     associated data, so that a ciphertext moved to another message or field no longer
//     decrypts.
//   - deterministic: a key created with derived=true and convergent_encryption=true; the
//     field path is the derivation context, so equal values in the same field give equal
//     ciphertexts (joins, lookups) while the same value in two fields does not.
//   - fpe: FF1 needs a raw AES key, which Transit never exports. FPEKey derives one inside
//     Vault as HMAC-SHA-256(hmac key of version N, "pubcrypt fpe key v1"): the derived key
//     is versioned and rotates with the transit key, and the transit key itself stays in
//     Vault.
//
// A token for field encryption with key K on mount "transit" needs:
//
//	path "transit/encrypt/K"           { capabilities = ["update"] }  # transit, deterministic
//	path "transit/decrypt/K"           { capabilities = ["update"] }
//	path "transit/hmac/K/sha2-256"     { capabilities = ["update"] }  # fpe
//	path "transit/keys/K"              { capabilities = ["read"] }    # fpe, KeyInfo
//	path "transit/keys/K/rotate"       { capabilities = ["update"] }  # RotateKey only
//
// Grant "update", not "create", on encrypt: with "create" Vault upserts a key that does
// not exist, so a mistyped key name would silently get a fresh key of its own (and, for
// deterministic mode, a key that is not convergent). Without it such a call is refused
// with "permission denied". Setting transit's config/keys disable_upsert=true closes the
// same door for every token.

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/pubcrypt/pubcrypt/fault"
)

// Error kinds of field encryption, matched with errors.Is besides the kinds of keyring.go.
var (
	// ErrDecrypt: the ciphertext does not decrypt under the key: it was changed, it is
	// malformed, or its associated data or derivation context differs from encryption's.
	// Message.
	ErrDecrypt = fault.New(fault.Message, "ciphertext does not decrypt")
	// ErrValueRefused: the key service refused one value for what it is, not for who
	// asks: Vault refuses a request whose JSON exceeds its listener's limits
	// (max_json_string_value_length, 1 MiB by default: a value over ~768 KiB before
	// base64) with HTTP 500 "JSON string value exceeds allowed length", and one over
	// max_request_size likewise. Message: the same value is always refused. Batch calls
	// split a refused request until only the refused values fail, each in its item's Err.
	ErrValueRefused = fault.New(fault.Message, "value refused by key service")
	// ErrInvalidInput: the request does not fit the key (no context for a derived key,
	// associated data for a key type without AEAD, context in some items only, a key or
	// role name that is not one, ...). Environment: it is a configuration error, not a
	// property of one message, and every message would fail the same way.
	ErrInvalidInput = fault.New(fault.Environment, "input refused by key service")
)

var _ FieldKeyring = (*Vault)(nil)

// fpeLabel is the input of the HMAC that derives FPE keys. Changing it changes every FPE
// key: it names the derivation, versioned like a format.
const fpeLabel = "pubcrypt fpe key v1"

// keyInfoTTL bounds how long FPEKey trusts a key's configuration it read from Vault.
const keyInfoTTL = 30 * time.Second

// KeyInfo is the configuration of a transit key that field encryption depends on.
type KeyInfo struct {
	// Type is the key type, e.g. "aes256-gcm96".
	Type string
	// LatestVersion is the version new ciphertexts are made under.
	LatestVersion int
	// MinDecryptionVersion is the oldest version Vault still decrypts with.
	MinDecryptionVersion int
	// MinEncryptionVersion is the oldest version Vault still encrypts or HMACs with when a
	// version is asked for explicitly (0: any).
	MinEncryptionVersion int
	// MinAvailableVersion is the oldest version Vault still holds (trim destroys the
	// older ones); 0 means every version.
	MinAvailableVersion int
	// Derived: every operation needs a derivation context.
	Derived bool
	// Convergent: with Derived, the same plaintext and context give the same ciphertext.
	Convergent bool
	// SupportsEncryption: the key type encrypts (and so gives data keys); signing-only
	// key types do not.
	SupportsEncryption bool
}

// EncryptBatch encrypts every item's Plaintext into its Ciphertext under the transit key
// named key, in one request to Vault however many items there are. AssociatedData and
// Context are sent base64-encoded, as Vault expects them; Context must be set in every
// item or in none. An item Vault refused alone gets an *Error in its Err and keeps no
// Ciphertext; the returned error means the request failed as a whole (and no item's Err
// is set). Empty items make no request.
//
// Vault ignores Context for a key that is not derived: the ciphertexts are then
// randomized and decrypt under any context. Deterministic mode must check at start-up
// that KeyInfo reports Derived and Convergent.
func (v *Vault) EncryptBatch(ctx context.Context, key string, items []TransitItem) error {
	const op = "encrypt"
	if len(items) == 0 {
		return nil
	}
	if err := checkBatch(op, key, items); err != nil {
		return err
	}
	in := make([]input, len(items))
	for i, it := range items {
		in[i] = transitInput(input(nil).add("plaintext", base64.StdEncoding.EncodeToString(it.Plaintext)), it)
	}
	results, err := v.batch(ctx, op, key, "encrypt/"+key, in)
	if err != nil {
		return err
	}
	for i, r := range results {
		it := &items[i]
		it.Ciphertext, it.Err = "", nil
		if r.Error != "" {
			it.Err = v.itemError(op, key, r.KeyVersion, "", r)
			continue
		}
		version, ok := wrappedVersion(r.Ciphertext)
		if !ok {
			it.Err = &Error{Op: op, KeyID: key, Kind: ErrUnavailable, Err: errors.New("vault returned a ciphertext without a vault:vN: prefix")}
			continue
		}
		if r.KeyVersion > 0 && r.KeyVersion != version {
			it.Err = &Error{Op: op, KeyID: key, Version: version, Kind: ErrUnavailable, Err: fmt.Errorf("vault returned a v%d ciphertext for key_version %d", version, r.KeyVersion)}
			continue
		}
		it.Ciphertext = r.Ciphertext
	}
	return nil
}

// DecryptBatch decrypts every item's Ciphertext into its Plaintext, with the item's
// AssociatedData and Context, in one request to Vault. Items that fail alone (changed,
// other associated data or context, version below min_decryption_version) get an *Error
// in Err and a nil Plaintext; the others are decrypted. Ciphertexts that are not of the
// form "vault:vN:..." fail locally and are not sent.
func (v *Vault) DecryptBatch(ctx context.Context, key string, items []TransitItem) error {
	const op = "decrypt"
	if len(items) == 0 {
		return nil
	}
	if err := checkBatch(op, key, items); err != nil {
		return err
	}
	var in []input
	var sent []int // index in items of each element of in
	for i := range items {
		it := &items[i]
		it.Plaintext, it.Err = nil, nil
		if _, ok := wrappedVersion(it.Ciphertext); !ok {
			it.Err = &Error{Op: op, KeyID: key, Kind: ErrDecrypt, Err: errors.New(`ciphertext is not of the form "vault:vN:..."`)}
			continue
		}
		in = append(in, transitInput(input(nil).add("ciphertext", it.Ciphertext), *it))
		sent = append(sent, i)
	}
	if len(in) == 0 {
		return nil
	}
	results, err := v.batch(ctx, op, key, "decrypt/"+key, in)
	if err != nil {
		return err
	}
	for j, r := range results {
		it := &items[sent[j]]
		version, _ := wrappedVersion(it.Ciphertext)
		if r.Error != "" {
			it.Err = v.itemError(op, key, version, it.Ciphertext, r)
			continue
		}
		pt, err := base64.StdEncoding.DecodeString(r.Plaintext)
		if err != nil {
			it.Err = &Error{Op: op, KeyID: key, Version: version, Kind: ErrUnavailable, Err: errors.New("vault returned a plaintext that is not base64")}
			continue
		}
		it.Plaintext = pt
	}
	return nil
}

// checkBatch checks what Vault would refuse for the whole batch, before any request:
// the key name (it may come from a message) and a context set in some items only.
func checkBatch(op, key string, items []TransitItem) error {
	if !transitName.MatchString(key) {
		return &Error{Op: op, KeyID: key, Kind: ErrInvalidInput, Err: errors.New("not a valid transit key name")}
	}
	withContext := len(items[0].Context) > 0
	for i, it := range items {
		if (len(it.Context) > 0) != withContext {
			return &Error{Op: op, KeyID: key, Kind: ErrInvalidInput, Err: fmt.Errorf("item %d: context must be set in every item of a batch or in none", i)}
		}
	}
	return nil
}

// transitInput adds an item's associated data and context to a batch_input element.
// Vault base64-decodes both; raw text would fail to decode or, worse, decode to other
// bytes when it happens to be valid base64.
func transitInput(in input, it TransitItem) input {
	if len(it.AssociatedData) > 0 {
		in = in.add("associated_data", base64.StdEncoding.EncodeToString(it.AssociatedData))
	}
	if len(it.Context) > 0 {
		in = in.add("context", base64.StdEncoding.EncodeToString(it.Context))
	}
	return in
}

// input is one batch_input element, encoded as it is built: the members of a JSON object
// of strings, without the braces. It replaces a map[string]string given to json.Marshal,
// which cost a map per item and reflection, key sorting and allocations per entry: at
// 1,000 items a request, about a microsecond per item on the 2-core machine, the larger
// part of what the client spends on a transit field.
type input []byte

// add appends the member "k": v. The first member allocates room for a few more.
func (in input) add(k, v string) input {
	if cap(in) == 0 {
		in = make(input, 0, len(k)+len(v)+96)
	} else if len(in) > 0 {
		in = append(in, ',')
	}
	in = appendJSONString(in, k)
	in = append(in, ':')
	return appendJSONString(in, v)
}

// appendJSONString appends s as a JSON string. Printable ASCII without '"' or '\' (every
// base64 value, ciphertext, key version and option string pubcrypt sends) is copied as it
// is; anything else goes through encoding/json, which escapes it and replaces invalid
// UTF-8 as json.Marshal always did here.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' {
			q, _ := json.Marshal(s) // a string always encodes
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// batchBody is the request body {"batch_input":[...]} of in.
func batchBody(in []input) []byte {
	n := len(`{"batch_input":[]}`)
	for _, it := range in {
		n += len(it) + 3
	}
	b := make([]byte, 0, n)
	b = append(b, `{"batch_input":[`...)
	for i, it := range in {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, '{')
		b = append(b, it...)
		b = append(b, '}')
	}
	return append(b, "]}"...)
}

// batchResult is one element of Vault's batch_results, for encrypt, decrypt and
// transform's encode and decode.
type batchResult struct {
	Ciphertext   string `json:"ciphertext"`
	KeyVersion   int    `json:"key_version"`
	Plaintext    string `json:"plaintext"`
	EncodedValue string `json:"encoded_value"`
	DecodedValue string `json:"decoded_value"`
	Error        string `json:"error"`
	status       int    // HTTP status of the whole answer
}

// maxBatchItems and maxBatchBytes bound one batch_input request, well inside Vault's
// default listener limits (10,000 array elements, 500,000 JSON tokens, 32 MiB
// max_request_size): a large batch goes as several requests instead of being refused as a
// whole, so that a refusal for size (ErrValueRefused) is about one value, never about
// how many values were sent together.
//
// A batch of at least 2·minParallelItems items is sent as up to maxInFlight requests at
// once, of equal size: Vault works through the items of one request one after the other,
// so requests in flight together use more of its cores, and no request is smaller than
// minParallelItems items, so the calls per message stay low (at most one per 250 items).
const (
	maxBatchItems    = 1000
	maxBatchBytes    = 8 << 20
	minParallelItems = 250
	maxInFlight      = 4
)

// batch sends in as batch_input requests (see maxBatchItems, maxInFlight) and returns
// batch_results, one per input, in order. The error is a failure of a request as a
// whole; a value Vault refuses for its size fails alone, in its item's result (see
// splitRefused).
func (v *Vault) batch(ctx context.Context, op, key, path string, in []input) ([]batchResult, error) {
	if len(in) == 0 {
		return nil, nil
	}
	chunks := splitBatch(in)
	if len(chunks) == 1 {
		return v.splitRefused(ctx, op, key, path, in)
	}
	results := make([][]batchResult, len(chunks))
	errs := make([]error, len(chunks))
	sem := make(chan struct{}, maxInFlight)
	var wg sync.WaitGroup
	for i, c := range chunks {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			results[i], errs[i] = v.splitRefused(ctx, op, key, path, c)
		})
	}
	wg.Wait()
	out := make([]batchResult, 0, len(in))
	for i := range chunks {
		if errs[i] != nil {
			return nil, errs[i]
		}
		out = append(out, results[i]...)
	}
	return out, nil
}

// splitBatch cuts in into the requests batch sends: equal parts of at least
// minParallelItems items, as many as maxInFlight (more if maxBatchItems requires), each
// then cut where it would exceed maxBatchBytes.
func splitBatch(in []input) [][]input {
	parts := max(1, min(maxInFlight, len(in)/minParallelItems), (len(in)+maxBatchItems-1)/maxBatchItems)
	per := (len(in) + parts - 1) / parts
	var chunks [][]input
	for start := 0; start < len(in); {
		end, size := start, 2
		for end < len(in) && end-start < per {
			n := len(in[end]) + 3
			if end > start && size+n > maxBatchBytes {
				break
			}
			size += n
			end++
		}
		chunks = append(chunks, in[start:end])
		start = end
	}
	if len(chunks) == 0 {
		chunks = append(chunks, in)
	}
	return chunks
}

// splitRefused sends in as one request; if Vault refuses the request as a whole for its
// content (ErrValueRefused: a value over its JSON limits, which it answers with HTTP 500
// and no batch_results), it sends each half again, down to single items, so that only
// the values at fault fail: each gets the refusal in its own result, and the others are
// encrypted or decrypted. Costs about 2·log2(len(in)) extra requests per refused value,
// on a path that only a message at fault takes.
func (v *Vault) splitRefused(ctx context.Context, op, key, path string, in []input) ([]batchResult, error) {
	results, err := v.batchOnce(ctx, op, key, path, in)
	if err == nil || !errors.Is(err, ErrValueRefused) {
		return results, err
	}
	if len(in) == 1 {
		var ve *VaultError
		if !errors.As(err, &ve) {
			return nil, err
		}
		return []batchResult{{Error: strings.Join(ve.Errors, "\n"), status: ve.StatusCode}}, nil
	}
	half := len(in) / 2
	first, err := v.splitRefused(ctx, op, key, path, in[:half])
	if err != nil {
		return nil, err
	}
	second, err := v.splitRefused(ctx, op, key, path, in[half:])
	if err != nil {
		return nil, err
	}
	return append(first, second...), nil
}

// batchOnce sends one batch_input request and returns batch_results, one per input. Vault
// answers a batch with failed items with HTTP 400 (500 for internal errors) and still
// lists every item's result, so an error answer that carries batch_results is per item,
// and only one without them is a failure of the request.
func (v *Vault) batchOnce(ctx context.Context, op, key, path string, in []input) ([]batchResult, error) {
	body := batchBody(in)
	var answer batchAnswer
	status, err := v.do(ctx, http.MethodPost, path, body, &answer)
	results := answer.Data.BatchResults
	switch {
	case len(results) == 0 && err != nil:
		return nil, v.fail(ctx, op, key, 0, "", err)
	case len(results) != len(in):
		return nil, &Error{Op: op, KeyID: key, Kind: ErrUnavailable, Err: fmt.Errorf("vault answered %d batch results for %d items", len(results), len(in))}
	}
	for i := range results {
		results[i].status = status
	}
	return results, nil
}

// do sends one request to MOUNT/path and decodes the JSON answer into out whatever its
// HTTP status, for answers whose body matters even when the status is an error. err is
// the client's error: an *api.ResponseError for an error status, or a network error.
func (v *Vault) do(ctx context.Context, method, path string, body []byte, out any) (status int, err error) {
	ctx, cancel := context.WithTimeout(ctx, v.timeout)
	defer cancel()
	r := v.client.NewRequest(method, "/v1/"+v.mount+"/"+path)
	r.BodyBytes = body
	// Not Logical().Write, which drops the body of an HTTP 400, where the results of a
	// batch with failed items are; not Logical().WriteRaw, which cancels its context as
	// it returns, so that a large answer fails while being read ("context canceled").
	// This ctx is cancelled once the body has been read.
	//lint:ignore SA1019 see above
	resp, err := v.client.RawRequestWithContext(ctx, r)
	if resp == nil {
		return 0, err
	}
	defer resp.Body.Close()
	// A decode error leaves out empty or partly filled; the caller checks what it needs.
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	decodeAnswer(b, out)
	return resp.StatusCode, err
}

// fastDecoder is an answer type that can read the answers it usually gets without
// encoding/json (batchAnswer); do falls back to encoding/json when fastDecode reports
// false.
type fastDecoder interface{ fastDecode(b []byte) bool }

// decodeAnswer decodes the JSON answer b into out, as json.Decoder does: by out's
// fastDecode where it has one that can, by encoding/json otherwise.
func decodeAnswer(b []byte, out any) {
	if d, ok := out.(fastDecoder); ok && d.fastDecode(b) {
		return
	}
	json.NewDecoder(bytes.NewReader(b)).Decode(out)
}

// itemError is the *Error of one failed item of a batch.
func (v *Vault) itemError(op, key string, version int, ciphertext string, r batchResult) error {
	ve := &VaultError{StatusCode: r.status, Errors: v.scrub(cleanVaultError(r.Error), ciphertext)}
	return &Error{Op: op, KeyID: key, Version: version, Kind: shredded(key, transitKind(op, ve)), Err: ve}
}

// transitKind is kindOf for transit items, where a ciphertext that does not authenticate
// is ErrDecrypt (not a wrapped data key) and other refusals are about the input.
func transitKind(op string, ve *VaultError) error {
	msg := strings.ToLower(strings.Join(ve.Errors, "; "))
	if strings.Contains(msg, "context") || strings.Contains(msg, "associated_data") {
		// "missing 'context' for key derivation...", "'[0].associated_data' provided
		// for non-AEAD cipher suite", "context should be set either in all...".
		return ErrInvalidInput
	}
	switch k := kindOf(op, ve); {
	case k == ErrInvalidWrappedKey:
		return ErrDecrypt
	case k != nil:
		return k
	case op == "decrypt":
		return ErrDecrypt
	}
	return ErrInvalidInput
}

// FPEKey returns the 32-byte FF1 key of the given version of the transit key named key
// (0: the latest) and its version. The key is HMAC-SHA-256 under the transit key's HMAC
// key of that version, computed by Vault (hmac/KEY/sha2-256): Vault never exports the
// transit key, and rotating it gives a new FPE key while older versions stay available
// for decryption.
//
// A version below the key's min_decryption_version is refused with ErrVersionTooOld.
// FPEKey checks it against the key's configuration (keys/KEY, read at most every 30
// seconds) before asking for the HMAC, so an old version costs no HMAC request and the
// refusal names min_decryption_version. Vault enforces it as well: raising
// min_decryption_version archives the older versions, and hmac answers "no such key
// version" for them, which FPEKey also reports as ErrVersionTooOld; a stale cached
// configuration therefore never lets an old version through. Vault also refuses an
// explicit version below min_encryption_version ("version is too old"), again
// ErrVersionTooOld: do not set min_encryption_version above versions that must still
// decrypt.
//
// It needs "update" on MOUNT/hmac/KEY/sha2-256 and "read" on MOUNT/keys/KEY. The result
// is a key: callers may cache it, never log it.
func (v *Vault) FPEKey(ctx context.Context, key string, version int) ([]byte, int, error) {
	const op = "derive fpe key"
	if !transitName.MatchString(key) {
		return nil, 0, &Error{Op: op, KeyID: key, Version: version, Kind: ErrInvalidInput, Err: errors.New("not a valid transit key name")}
	}
	if version < 0 {
		return nil, 0, &Error{Op: op, KeyID: key, Kind: ErrDecrypt, Err: fmt.Errorf("key version %d is negative", version)}
	}
	if version > 0 {
		info, err := v.cachedKeyInfo(ctx, key, version)
		if err != nil {
			return nil, 0, err
		}
		if version < info.MinDecryptionVersion {
			return nil, 0, &Error{Op: op, KeyID: key, Version: version, Kind: shredded(key, ErrVersionTooOld),
				Err: fmt.Errorf("min_decryption_version is %d", info.MinDecryptionVersion)}
		}
		if version > info.LatestVersion {
			return nil, 0, &Error{Op: op, KeyID: key, Version: version, Kind: ErrDecrypt,
				Err: fmt.Errorf("the key has no version %d (latest is %d)", version, info.LatestVersion)}
		}
	}
	body := map[string]any{"input": base64.StdEncoding.EncodeToString([]byte(fpeLabel))}
	if version > 0 {
		body["key_version"] = version
	}
	data, err := v.write(ctx, "hmac/"+key+"/sha2-256", body)
	if err != nil {
		return nil, 0, fpeError(v.fail(ctx, op, key, version, "", err))
	}
	mac, _ := data["hmac"].(string)
	got, ok := wrappedVersion(mac)
	if !ok || (version > 0 && got != version) {
		return nil, 0, &Error{Op: op, KeyID: key, Version: version, Kind: ErrUnavailable, Err: errors.New("vault returned an hmac that is not of the form vault:vN:... for the version asked")}
	}
	fk, err := base64.StdEncoding.DecodeString(mac[strings.LastIndexByte(mac, ':')+1:])
	if err != nil || len(fk) != 32 {
		return nil, 0, &Error{Op: op, KeyID: key, Version: got, Kind: ErrUnavailable, Err: errors.New("vault returned an hmac that is not 32 bytes of base64")}
	}
	return fk, got, nil
}

// fpeError sets the kind of the hmac endpoint's refusals of a version: "no such key
// version" for a version Vault archived when min_decryption_version was raised above it,
// "key version does not exist" for one above the latest.
func fpeError(err error) error {
	var e *Error
	var ve *VaultError
	if !errors.As(err, &e) || !errors.As(err, &ve) || e.Kind != nil {
		return err
	}
	msg := strings.Join(ve.Errors, "; ")
	switch {
	case strings.Contains(msg, "no such key version"):
		e.Kind = shredded(e.KeyID, ErrVersionTooOld)
	case strings.Contains(msg, "key version does not exist"):
		e.Kind = ErrDecrypt
	}
	return err
}

// KeyInfo reads the configuration of the transit key named name from Vault
// (MOUNT/keys/NAME, capability "read"). It also refreshes what FPEKey trusts.
func (v *Vault) KeyInfo(ctx context.Context, name string) (KeyInfo, error) {
	const op = "read key info"
	if !transitName.MatchString(name) {
		return KeyInfo{}, &Error{Op: op, KeyID: name, Kind: ErrInvalidInput, Err: errors.New("not a valid transit key name")}
	}
	rctx, cancel := context.WithTimeout(ctx, v.timeout)
	defer cancel()
	sec, err := v.client.Logical().ReadWithContext(rctx, v.mount+"/keys/"+name)
	if err == nil && (sec == nil || sec.Data == nil) {
		// transit answers a missing key with an empty 404, which the client returns as nil.
		err = &api.ResponseError{StatusCode: http.StatusNotFound, Errors: []string{"no key named " + name}}
	}
	if err != nil {
		return KeyInfo{}, v.fail(rctx, op, name, 0, "", err)
	}
	d := sec.Data
	info := KeyInfo{}
	info.Type, _ = d["type"].(string)
	info.Derived, _ = d["derived"].(bool)
	info.Convergent, _ = d["convergent_encryption"].(bool)
	info.SupportsEncryption, _ = d["supports_encryption"].(bool)
	info.LatestVersion, _ = intField(d["latest_version"])
	info.MinDecryptionVersion, _ = intField(d["min_decryption_version"])
	info.MinEncryptionVersion, _ = intField(d["min_encryption_version"])
	info.MinAvailableVersion, _ = intField(d["min_available_version"])
	if info.LatestVersion <= 0 {
		return KeyInfo{}, &Error{Op: op, KeyID: name, Kind: ErrUnavailable, Err: errors.New("vault returned a key without latest_version")}
	}
	v.keyInfos().put(name, info)
	return info, nil
}

// RotateKey adds a new version to the transit key named name (MOUNT/keys/NAME/rotate,
// capability "update"). New ciphertexts and FPE keys use it; older versions still decrypt.
func (v *Vault) RotateKey(ctx context.Context, name string) error {
	const op = "rotate key"
	if !transitName.MatchString(name) {
		return &Error{Op: op, KeyID: name, Kind: ErrInvalidInput, Err: errors.New("not a valid transit key name")}
	}
	v.keyInfos().drop(name)
	if _, err := v.write(ctx, "keys/"+name+"/rotate", nil); err != nil {
		return v.fail(ctx, op, name, 0, "", err)
	}
	return nil
}

// cachedKeyInfo returns the key's configuration, read at most keyInfoTTL ago, or again
// if it does not know the version asked for yet (the key was rotated since).
func (v *Vault) cachedKeyInfo(ctx context.Context, name string, version int) (KeyInfo, error) {
	if info, ok := v.keyInfos().get(name); ok && version <= info.LatestVersion {
		return info, nil
	}
	return v.KeyInfo(ctx, name)
}

// keyInfoCache holds KeyInfo by key name for keyInfoTTL. Only keys Vault answered for are
// kept, so names read from messages cannot grow it with keys that do not exist.
type keyInfoCache struct {
	mu sync.Mutex
	m  map[string]keyInfoEntry
}

type keyInfoEntry struct {
	info KeyInfo
	at   time.Time
}

func (c *keyInfoCache) get(name string) (KeyInfo, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[name]
	if !ok || time.Since(e.at) > keyInfoTTL {
		return KeyInfo{}, false
	}
	return e.info, true
}

func (c *keyInfoCache) put(name string, info KeyInfo) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]keyInfoEntry{}
	}
	now := time.Now()
	for n, e := range c.m {
		if now.Sub(e.at) > keyInfoTTL {
			delete(c.m, n)
		}
	}
	c.m[name] = keyInfoEntry{info: info, at: now}
}

func (c *keyInfoCache) drop(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, name)
}

func (v *Vault) keyInfos() *keyInfoCache { return &v.infos }
