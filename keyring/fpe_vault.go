package keyring

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
)

// DefaultFPEMount is the mount path of pubcrypt's Vault FPE plugin that Vault.FPEEncrypt
// and Vault.FPEDecrypt use unless VaultOptions.FPEMount says otherwise.
const DefaultFPEMount = "pubcrypt-fpe"

var _ FPECipher = (*Vault)(nil)

// FPEEncrypt enciphers items with FF1 inside Vault, under the latest version of the
// plugin key, in batch_input requests to MOUNT/encode/KEY. The token needs "update" there
// and nothing else: the FF1 key never leaves Vault, and a token without "update" on
// MOUNT/decode/KEY cannot decode.
func (v *Vault) FPEEncrypt(ctx context.Context, key string, items []FPEItem) (int, error) {
	const op = "fpe encode"
	if len(items) == 0 {
		return 0, nil
	}
	results, err := v.fpeBatch(ctx, op, key, 0, items)
	if err != nil {
		return 0, err
	}
	// A large batch goes as several requests; a rotation between them would give two
	// versions, and a message carries one. Rare: send again, pinned to the newest.
	version, mixed := 0, false
	for _, r := range results {
		if r.Error == "" {
			if version != 0 && r.KeyVersion != version {
				mixed = true
			}
			version = max(version, r.KeyVersion)
		}
	}
	if mixed {
		if results, err = v.fpeBatch(ctx, op, key, version, items); err != nil {
			return 0, err
		}
	}
	errs := v.fpeResults(op, key, items, results, true)
	for i, r := range results {
		if items[i].Err == nil && r.KeyVersion != version {
			return 0, &Error{Op: op, KeyID: key, Kind: ErrUnavailable, Err: fmt.Errorf("vault answered key versions %d and %d in one batch", version, r.KeyVersion)}
		}
	}
	if version <= 0 && errs == nil {
		return 0, &Error{Op: op, KeyID: key, Kind: ErrUnavailable, Err: errors.New("vault answered no key version")}
	}
	return version, errs
}

// FPEDecrypt deciphers items under the given version of the plugin key, in batch_input
// requests to MOUNT/decode/KEY ("update" there).
func (v *Vault) FPEDecrypt(ctx context.Context, key string, version int, items []FPEItem) error {
	const op = "fpe decode"
	if version <= 0 {
		return &Error{Op: op, KeyID: key, Version: version, Kind: ErrDecrypt, Err: errors.New("a key version is required")}
	}
	if len(items) == 0 {
		return nil
	}
	results, err := v.fpeBatch(ctx, op, key, version, items)
	if err != nil {
		return err
	}
	return v.fpeResults(op, key, items, results, false)
}

// fpeBatch sends items to the plugin's encode or decode path; version 0 lets encode pick
// the latest.
func (v *Vault) fpeBatch(ctx context.Context, op, key string, version int, items []FPEItem) ([]batchResult, error) {
	if !transitName.MatchString(key) {
		return nil, &Error{Op: op, KeyID: key, Kind: ErrInvalidInput, Err: errors.New("not a valid FPE plugin key name")}
	}
	path := "encode/" + key
	if op == "fpe decode" {
		path = "decode/" + key
	}
	in := make([]input, len(items))
	for i, it := range items {
		m := input(nil).add("value", it.Value)
		if len(it.Tweak) > 0 {
			m = m.add("tweak", base64.StdEncoding.EncodeToString(it.Tweak))
		}
		if it.Options != "" {
			m = m.add("options", it.Options)
		}
		if version > 0 {
			m = m.add("key_version", strconv.Itoa(version))
		}
		in[i] = m
	}
	// A view of v on the plugin's mount: same client, so the same request counter, token
	// and error mapping.
	fv := &Vault{client: v.client, mount: v.fpeMount, key: key, timeout: v.timeout, auth: v.auth}
	results, err := fv.batch(ctx, op, key, path, in)
	var e *Error
	if errors.As(err, &e) && errors.Is(err, ErrKeyNotFound) {
		// Say where it looked: a missing mount and a missing key read alike.
		e.Err = fmt.Errorf("%w (is pubcrypt's Vault FPE plugin enabled at %q, with key %q?)", e.Err, v.fpeMount, key)
	}
	return results, err
}

// fpeResults copies results into items and joins one *Error per failed item, naming its
// index, never its value.
func (v *Vault) fpeResults(op, key string, items []FPEItem, results []batchResult, encode bool) error {
	var errs []error
	for i, r := range results {
		items[i].Result, items[i].Err = "", nil
		if r.Error != "" {
			ve := &VaultError{StatusCode: r.status, Errors: v.scrub(cleanVaultError(r.Error), items[i].Value)}
			kindOp := "decode"
			if encode {
				kindOp = "encode"
			}
			items[i].Err = &Error{Op: fmt.Sprintf("%s item %d", op, i), KeyID: key, Version: r.KeyVersion, Kind: transformKind(kindOp, ve), Err: ve}
			errs = append(errs, items[i].Err)
			continue
		}
		if encode {
			items[i].Result = r.EncodedValue
		} else {
			items[i].Result = r.DecodedValue
		}
	}
	return errors.Join(errs...)
}
