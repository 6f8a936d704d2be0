// Package fields implements field-level encryption of JSON messages, version 1 of the
// format specified in docs/FIELDS.md; testdata/fields/v1.json holds vectors any
// implementation can be checked against.
//
// Most streaming data is JSON with a few sensitive fields, and most consumers need the
// rest. A producer names the fields to protect in a Policy (path → mode); Protect
// replaces those values in place and leaves every other byte of the body as it was, so
// brokers, schemas and consumers without keys still read the rest. The consumer needs
// no configuration: a metadata entry, the manifest, says which paths are protected, how,
// and under which keys, and Open restores them.
//
// Five modes trade cost against what stays visible. Transit sends the value to Vault
// (randomized, bound to the message and the field's position); Envelope encrypts it
// locally under the message's data key, with no key-service call per message;
// Deterministic and FPE give equal outputs for equal inputs under one rule, so values can
// be joined and counted without decrypting them, and FPE keeps the value a string of
// digits of the same shape; with the option vault (fpe(bin,luhn,vault)) the key service
// runs FF1 itself, so the key never reaches producers. Transform hands the string to a role of Vault Enterprise's
// Transform engine (named in the rule and the manifest) and keeps what it returns. The
// key-service calls are batched: one per Vault key (or Transform role) for a whole batch
// of messages on the send side, one per key per message on the receive side.
//
// Field encryption alone would leave the rest of the message open to silent change, and
// FPE is not authenticated at all. So every message also carries a MAC (AES-256-GCM with
// an empty plaintext) under its data key, as in docs/FORMAT.md, over the body, the
// manifest, the envelope entries and the clear metadata. Open checks it before it asks
// the key service for anything but the data key: a changed byte anywhere is ErrAuth,
// never a garbled value.
package fields

import "github.com/pubcrypt/pubcrypt/fault"

// Error kinds, matched with errors.Is. Errors name message indexes, message IDs and field
// paths, never a field value or a key. A received message that does not follow the format
// is also envelope.ErrMalformed; a MAC that does not verify is envelope.ErrAuth; a metadata
// key the producer may not use is envelope.ErrInvalidInput; key-service failures are the
// keyring's kinds (keyring.ErrVersionTooOld, ...).
//
// All of them are of class fault.Message: retrying the same message never helps. ErrPolicy
// is one too because the policies Protect meets per message come from the message (its
// pubcrypt-protect entry or its struct tags); a producer's own policy is checked once,
// at start (Sealer.CheckPolicy), where a class decides nothing.
var (
	// ErrPolicy: a policy that cannot be used (bad path, unknown mode, option on a mode
	// that has none, a path twice or inside another, a key missing for a mode it uses).
	ErrPolicy = fault.New(fault.Message, "fields: invalid policy")
	// ErrFieldType: a value its mode cannot protect: FPE on anything but a JSON string of
	// digits and separators, or one too short for FF1 (also fpe.ErrDomainTooSmall).
	ErrFieldType = fault.New(fault.Message, "fields: value cannot be protected in this mode")
	// ErrManifest: a manifest that does not follow the format, or would exceed
	// MaxManifestLen bytes.
	ErrManifest = fault.New(fault.Message, "fields: invalid manifest")
	// ErrNotJSON: a body to protect that is not one JSON value.
	ErrNotJSON = fault.New(fault.Message, "fields: body is not JSON")
	// ErrUnmatched: a JSON body whose top-level value is not an object (an array, a
	// string, ...), which no policy addresses, under a policy that says
	// unmatched=refuse (or, from Protect, one that says unmatched=body: the caller
	// encrypts such a body whole instead, see Policy.Unmatched).
	ErrUnmatched = fault.New(fault.Message, "fields: body is not a JSON object, so the field policy addresses nothing in it")
	// ErrSubject: under a policy with a subject option, a message whose subject cannot be
	// found: no such metadata entry, no JSON string or number at the path, or an empty
	// one. Refused rather than sent under a key no erasure could reach.
	ErrSubject = fault.New(fault.Message, "fields: message names no subject")
)

// Input is one message to protect.
type Input struct {
	// Body is the producer's JSON document. Protect does not modify it.
	Body []byte
	// Metadata is the producer's metadata, sent in clear and authenticated. Keys and
	// values must be valid UTF-8 and no key may start with "pubcrypt".
	Metadata map[string]string
	// Policy names the values to protect.
	Policy Policy
}

// Output is a protected message, ready to send.
type Output struct {
	// Body is the input body with the protected values replaced.
	Body []byte
	// Metadata is the input metadata plus the entries "pubcrypt", "pubcrypt-dek" and
	// "pubcrypt-fields".
	Metadata map[string]string
}

// IsFields reports whether md carries a field manifest, that is whether the message is
// for Open rather than for envelope.Parse.
func IsFields(md map[string]string) bool {
	_, ok := md[ManifestKey]
	return ok
}
