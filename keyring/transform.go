package keyring

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/pubcrypt/pubcrypt/fault"
)

// ErrTransformNotAvailable: the Vault server has no Transform secrets engine. Transform is
// part of Vault Enterprise's Advanced Data Protection module; open-source Vault (and a dev
// server built from it) answers "plugin not found in the catalog" when asked to enable
// it and "no handler for route" for its paths. Field mode fpe gives format-preserving
// encryption on any Vault (see Vault.FPEKey).
//
// Environment: the server, not the message, lacks something.
var ErrTransformNotAvailable = fault.New(fault.Environment, "Vault Transform engine is not available on this server (Vault Enterprise with ADP only); use mode fpe instead")

// TransformOptions configures NewTransform.
type TransformOptions struct {
	// Client is the Vault client to copy address, TLS, token and namespace from, as for
	// VaultOptions.Client. Nil: from Vault's environment variables.
	Client *api.Client
	// Mount is the path of the transform secrets engine; default "transform".
	Mount string
	// Role is the transform role whose transformations encode and decode. Required.
	Role string
	// Transformation names the role's transformation to use; empty lets Vault pick the
	// role's only one.
	Transformation string
	// Timeout bounds each request to Vault; default 10s.
	Timeout time.Duration
	// Auth says how the keyring obtains and renews its token, as VaultOptions.Auth.
	Auth VaultAuth
}

// Transform encodes and decodes values with Vault Enterprise's Transform engine
// (format-preserving encryption, masking, tokenization), one batch_input request per
// call. A token needs "update" on MOUNT/encode/ROLE and MOUNT/decode/ROLE, and "read" on
// MOUNT/role/ROLE for Check. It is safe for concurrent use.
type Transform struct {
	// v carries the client, the request counter and the error mapping of the Vault
	// keyring; its mount is the transform mount and its key the role.
	v              *Vault
	transformation string
}

// NewTransform returns a Transform for opts.Role. It makes no request; Check does.
func NewTransform(opts TransformOptions) (*Transform, error) {
	if opts.Role == "" {
		return nil, &OptionError{Option: "TransformOptions.Role", Reason: "is required"}
	}
	if !transitName.MatchString(opts.Role) {
		return nil, &OptionError{Option: "TransformOptions.Role", Reason: fmt.Sprintf("%q is not a valid role name (letters, digits, _ . -)", opts.Role)}
	}
	if opts.Transformation != "" && !transitName.MatchString(opts.Transformation) {
		return nil, &OptionError{Option: "TransformOptions.Transformation", Reason: fmt.Sprintf("%q is not a valid transformation name", opts.Transformation)}
	}
	v, err := openVault("TransformOptions", opts.Mount, DefaultTransformMount, opts.Role, opts.Timeout, opts.Client, opts.Auth)
	if err != nil {
		return nil, err
	}
	return &Transform{v: v, transformation: opts.Transformation}, nil
}

// Calls returns the number of HTTP requests the Transform has sent to Vault.
func (t *Transform) Calls() int64 { return t.v.Calls() }

// Check asks Vault once whether the engine and the role exist (a read of
// MOUNT/role/ROLE), so that a misconfiguration shows at start-up rather than at the first
// message: ErrTransformNotAvailable when the server has no transform engine at the
// mount, ErrKeyNotFound when the role (or its transformation) does not exist.
func (t *Transform) Check(ctx context.Context) error {
	const op = "check transform role"
	role := t.v.key
	var answer struct {
		Data struct {
			Transformations []string `json:"transformations"`
		} `json:"data"`
		Errors []string `json:"errors"`
	}
	status, err := t.v.do(ctx, http.MethodGet, "role/"+role, nil, &answer)
	if status == http.StatusNotFound && len(answer.Errors) == 0 {
		// The engine answers a role that does not exist with an empty 404; a server
		// without the engine names the missing route.
		return &Error{Op: op, KeyID: role, Kind: ErrKeyNotFound, Err: fmt.Errorf("no transform role %q at mount %q", role, t.v.mount)}
	}
	if err != nil {
		return t.notAvailable(t.v.fail(ctx, op, role, 0, "", err))
	}
	if t.transformation != "" && !slices.Contains(answer.Data.Transformations, t.transformation) {
		return &Error{Op: op, KeyID: role, Kind: ErrKeyNotFound, Err: fmt.Errorf("role has no transformation %q", t.transformation)}
	}
	return nil
}

// Enable mounts the transform engine at the Transform's mount (sys/mounts/MOUNT, which
// needs "create" and "update" there; for setup, not for producers). On open-source Vault
// it fails with ErrTransformNotAvailable.
func (t *Transform) Enable(ctx context.Context) error {
	rctx, cancel := context.WithTimeout(ctx, t.v.timeout)
	defer cancel()
	if err := t.v.client.Sys().MountWithContext(rctx, t.v.mount, &api.MountInput{Type: "transform"}); err != nil {
		return t.notAvailable(t.v.fail(rctx, "enable transform engine", t.v.mount, 0, "", err))
	}
	return nil
}

// EncodeBatch encodes values with the role's transformation in one request. tweaks is nil
// or has one tweak per value, each nil or 7 bytes (FF3-1's 56-bit tweak, for
// transformations with tweak_source "supplied"). The result has one encoded value per
// value; when some items fail, their result is "" and the error joins one *Error per
// failed item, naming its index, never its value.
func (t *Transform) EncodeBatch(ctx context.Context, values []string, tweaks [][]byte) ([]string, error) {
	return t.batch(ctx, "encode", values, tweaks)
}

// DecodeBatch decodes values that EncodeBatch encoded, with the same tweaks, as above.
func (t *Transform) DecodeBatch(ctx context.Context, values []string, tweaks [][]byte) ([]string, error) {
	return t.batch(ctx, "decode", values, tweaks)
}

func (t *Transform) batch(ctx context.Context, op string, values []string, tweaks [][]byte) ([]string, error) {
	return transformBatch(ctx, t.v, op, t.transformation, values, tweaks)
}

// transformBatch sends one encode or decode batch_input request to v's mount for the role
// v.key, with the named transformation ("" for the role's only one) on every item.
func transformBatch(ctx context.Context, v *Vault, op, transformation string, values []string, tweaks [][]byte) ([]string, error) {
	role := v.key
	if len(values) == 0 {
		return nil, nil
	}
	if tweaks != nil && len(tweaks) != len(values) {
		return nil, &Error{Op: op, KeyID: role, Kind: ErrInvalidInput, Err: fmt.Errorf("%d tweaks for %d values", len(tweaks), len(values))}
	}
	in := make([]input, len(values))
	for i, val := range values {
		m := input(nil).add("value", val)
		if transformation != "" {
			m = m.add("transformation", transformation)
		}
		if tweaks != nil && tweaks[i] != nil {
			if len(tweaks[i]) != 7 {
				return nil, &Error{Op: op, KeyID: role, Kind: ErrInvalidInput, Err: fmt.Errorf("item %d: tweak has %d bytes, want 7", i, len(tweaks[i]))}
			}
			m = m.add("tweak", base64.StdEncoding.EncodeToString(tweaks[i]))
		}
		in[i] = m
	}
	results, err := v.batch(ctx, op, role, op+"/"+role, in)
	if err != nil {
		return nil, transformNotAvailable(err)
	}
	out := make([]string, len(values))
	var errs []error
	for i, r := range results {
		if r.Error != "" {
			ve := &VaultError{StatusCode: r.status, Errors: v.scrub(cleanVaultError(r.Error), values[i])}
			errs = append(errs, &Error{Op: fmt.Sprintf("%s item %d", op, i), KeyID: role, Kind: transformKind(op, ve), Err: ve})
			continue
		}
		if op == "encode" {
			out[i] = r.EncodedValue
		} else {
			out[i] = r.DecodedValue
		}
	}
	return out, errors.Join(errs...)
}

// transformKind is the kind of one failed item of an encode or decode batch. An item
// fails alone for its value (one the transformation's template does not match, one that
// does not decode), a fault of the message; but a refusal that names something missing or
// forbidden is about the environment, whichever item it is reported on.
func transformKind(op string, ve *VaultError) error {
	switch k := kindOf(op, ve); k {
	case ErrPermissionDenied, ErrKeyNotFound, ErrUnavailable, ErrVersionTooOld, ErrValueRefused:
		return k
	}
	if strings.Contains(strings.ToLower(strings.Join(ve.Errors, "; ")), "not found") {
		return ErrKeyNotFound
	}
	if op == "decode" {
		return ErrDecrypt
	}
	return ErrValueRefused
}

// notAvailable turns the answers of a Vault without the transform engine into
// ErrTransformNotAvailable.
func (t *Transform) notAvailable(err error) error { return transformNotAvailable(err) }

func transformNotAvailable(err error) error {
	var e *Error
	var ve *VaultError
	if !errors.As(err, &e) || !errors.As(err, &ve) {
		return err
	}
	msg := strings.ToLower(strings.Join(ve.Errors, "; "))
	if strings.Contains(msg, "plugin not found in the catalog") ||
		(ve.StatusCode == http.StatusNotFound && strings.Contains(msg, "no handler for route")) {
		e.Kind = ErrTransformNotAvailable
	}
	return err
}
