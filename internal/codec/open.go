package codec

import (
	"context"
	"errors"
	"slices"

	"gocloud.dev/pubsub"

	"github.com/pubcrypt/pubcrypt/fault"
	"github.com/pubcrypt/pubcrypt/internal/envelope"
	"github.com/pubcrypt/pubcrypt/internal/fields"
	"github.com/pubcrypt/pubcrypt/internal/telemetry"
	"github.com/pubcrypt/pubcrypt/internal/wire"
	"github.com/pubcrypt/pubcrypt/keyring"
)

// Info describes how a received message was protected.
type Info struct {
	// Encrypted is false for a message passed through by OpenOptions.AllowPlaintext.
	Encrypted bool
	// Fields is true for a message whose JSON fields were protected rather than its body.
	Fields bool
	// KeyID and KeyVersion name the key-encryption key that wrapped the data key.
	KeyID      string
	KeyVersion int
	// Sensitive names the metadata entries that travelled inside the ciphertext (whole-body
	// messages sent with SensitiveMetadata), sorted; nil if none.
	Sensitive []string
	// RecordKey is the metadata entry whose value was a protected record key (decrypted
	// now), "" if none.
	RecordKey string

	manifest string // of a field-level message, for FieldPolicy
}

// FieldPolicy is the field policy a field-level message was protected with: the rules
// that selected at least one of its values (docs/FIELDS.md section 6), nil for a
// whole-body message. Sent again under it, the decrypted message has the same values
// protected in the same modes, under the keys' latest versions.
func (i Info) FieldPolicy() (fields.Policy, error) {
	if !i.Fields {
		return nil, nil
	}
	return fields.ManifestPolicy(i.manifest)
}

// OpenOptions configure an Opener.
type OpenOptions struct {
	// Keyring unwraps data keys. Required.
	Keyring keyring.Keyring
	// Cache bounds the cache of unwrapped data keys.
	Cache keyring.CacheOptions
	// AllowPlaintext opens a message without an envelope as it is.
	AllowPlaintext bool
}

// Opener authenticates and decrypts messages. It is safe for concurrent use.
type Opener struct {
	keys           *keyring.UnwrapCache
	fields         *fields.Opener
	fk             keyring.FieldKeyring // nil: protected record keys cannot be opened
	allowPlaintext bool
}

// NewOpener returns an Opener. A keyring without the FieldKeyring capability (a KMS by
// URL) opens whole bodies and the envelope field mode, which need data keys only; fields
// of the other modes need Vault.
func NewOpener(opts OpenOptions) (*Opener, error) {
	if opts.Keyring == nil {
		return nil, errors.New("a keyring is required")
	}
	o := &Opener{keys: keyring.NewUnwrapCache(opts.Keyring, opts.Cache), allowPlaintext: opts.AllowPlaintext}
	fk, _ := opts.Keyring.(keyring.FieldKeyring)
	o.fk = fk
	o.fields = fields.NewOpener(fk, o.keys)
	return o, nil
}

// Open decrypts m in place; on error m is left exactly as received.
func (o *Opener) Open(ctx context.Context, m *pubsub.Message) (Info, error) {
	infos, errs := []Info{{}}, []error{nil}
	pending := keyPending(m, 0, nil)
	infos[0], errs[0] = o.open(ctx, m)
	if errs[0] == nil && pending != nil {
		o.restoreKeys(ctx, []*pubsub.Message{m}, pending, infos, errs)
	}
	record(ctx, m, infos[0], errs[0])
	return infos[0], errs[0]
}

// keyPending appends m, the message at index i, to pending if it carries the flag of a
// protected record key, with what it was as received.
func keyPending(m *pubsub.Message, i int, pending []keyOpen) []keyOpen {
	if m == nil {
		return pending
	}
	flag, ok := m.Metadata[wire.RecordKeyFlag]
	if !ok {
		return pending
	}
	return append(pending, keyOpen{i: i, flag: flag, body: m.Body, md: m.Metadata})
}

// restoreOpened is restoreKeys for the messages of pending that opened.
func (o *Opener) restoreOpened(ctx context.Context, msgs []*pubsub.Message, pending []keyOpen, infos []Info, errs []error) {
	var ok []keyOpen
	for _, p := range pending {
		if errs[p.i] == nil {
			ok = append(ok, p)
		}
	}
	if len(ok) > 0 {
		o.restoreKeys(ctx, msgs, ok, infos, errs)
	}
}

// record counts one message opened or not.
func record(ctx context.Context, m *pubsub.Message, info Info, err error) {
	switch {
	case err != nil:
		telemetry.Failed(ctx, telemetry.Open, fault.ClassOf(err), 1)
	case !info.Encrypted:
		telemetry.Opened(ctx, telemetry.Plaintext, len(m.Body))
	case info.Fields:
		telemetry.Opened(ctx, telemetry.Fields, len(m.Body))
	default:
		telemetry.Opened(ctx, telemetry.Body, len(m.Body))
	}
}

// open is Open without the telemetry, which OpenBatch records once per message.
func (o *Opener) open(ctx context.Context, m *pubsub.Message) (Info, error) {
	if fields.IsFields(m.Metadata) {
		return o.openFields(ctx, m)
	}
	return o.openBody(m, func(keyID, wrapped string) (*keyring.DataKey, error) {
		return o.keys.Get(ctx, keyID, wrapped)
	})
}

// OpenBatch decrypts msgs in place, together: the protected fields of all field-level
// messages cost one key-service call per key for the whole batch. errs[i] is nil or the
// fault of msgs[i] alone, which is then left as received.
//
// Whole-body messages are opened one by one. Once the key service has failed for one of
// them (a fault of the environment: Vault down, silent, refusing the token), the others
// of the batch are opened only under keys already cached: asking for each again would
// cost a retry or a whole timeout per message, up to a hundred of them, before the
// caller even learns of the outage. They get the same fault.
func (o *Opener) OpenBatch(ctx context.Context, msgs []*pubsub.Message) (infos []Info, errs []error) {
	infos = make([]Info, len(msgs))
	errs = make([]error, len(msgs))
	var batch []fields.Received
	var refs []int
	var envs []*envelope.Envelope // of the field-level messages, for their key versions
	var outage error
	var pending []keyOpen
	for i, m := range msgs {
		pending = keyPending(m, i, pending)
	}
	// The messages of a batch are mostly under one data key: the last one is reused
	// without a cache lookup.
	var last *keyring.DataKey
	get := func(keyID, wrapped string) (*keyring.DataKey, error) {
		if last != nil && last.KeyID == keyID && last.Wrapped == wrapped {
			return last, nil
		}
		k, err := o.keys.Get(ctx, keyID, wrapped)
		if err == nil {
			last = k
		}
		return k, err
	}
	for i, m := range msgs {
		if fields.IsFields(m.Metadata) {
			info, env := fieldsInfo(m)
			infos[i] = info
			batch = append(batch, fields.Received{Body: m.Body, Metadata: m.Metadata})
			refs = append(refs, i)
			envs = append(envs, env)
			continue
		}
		if outage != nil {
			infos[i], errs[i] = o.openCached(m, outage)
			continue
		}
		infos[i], errs[i] = o.openBody(m, get)
		if errs[i] != nil && fault.ClassOf(errs[i]) == fault.Environment {
			outage = errs[i]
		}
	}
	if len(batch) > 0 {
		for j, r := range o.fields.OpenBatch(ctx, batch) {
			i := refs[j]
			infos[i].KeyVersion = o.keyVersion(envs[j])
			if r.Err != nil {
				errs[i] = r.Err
				continue
			}
			msgs[i].Body, msgs[i].Metadata = r.Body, r.Metadata
		}
	}
	o.restoreOpened(ctx, msgs, pending, infos, errs)
	for i, m := range msgs {
		record(ctx, m, infos[i], errs[i])
	}
	return infos, errs
}

// openCached opens a whole-body message if its data key is cached, and otherwise
// returns outage, the key service's fault met by an earlier message, without asking it.
func (o *Opener) openCached(m *pubsub.Message, outage error) (Info, error) {
	return o.openBody(m, func(keyID, wrapped string) (*keyring.DataKey, error) {
		if k := o.keys.Cached(keyID, wrapped); k != nil {
			return k, nil
		}
		return nil, outage
	})
}

// openBody decrypts a whole-body message in place under the data key dataKey returns.
func (o *Opener) openBody(m *pubsub.Message, dataKey func(keyID, wrapped string) (*keyring.DataKey, error)) (Info, error) {
	env, err := envelope.Parse(m.Metadata)
	if err != nil {
		if o.allowPlaintext && errors.Is(err, envelope.ErrNoEnvelope) {
			return Info{}, nil
		}
		return Info{}, err
	}
	info := Info{Encrypted: true, KeyID: env.KeyID}
	key, err := dataKey(env.KeyID, env.Wrapped)
	if err != nil {
		return info, err
	}
	info.KeyVersion = key.Version
	aead, err := key.AEAD()
	if err != nil {
		return info, err
	}
	body, md, err := env.Open(aead, m.Body, m.Metadata)
	if err != nil {
		return info, err
	}
	if env.SensitiveMeta {
		for k := range md {
			if _, clear := m.Metadata[k]; !clear {
				info.Sensitive = append(info.Sensitive, k)
			}
		}
		slices.Sort(info.Sensitive)
	}
	m.Body, m.Metadata = body, md
	return info, nil
}

// openFields restores the protected fields of a field-level message (docs/FIELDS.md).
func (o *Opener) openFields(ctx context.Context, m *pubsub.Message) (Info, error) {
	info, env := fieldsInfo(m)
	body, md, err := o.fields.Open(ctx, m.Body, m.Metadata)
	info.KeyVersion = o.keyVersion(env)
	if err != nil {
		return info, err
	}
	m.Body, m.Metadata = body, md
	return info, nil
}

// fieldsInfo describes a field-level message from its envelope entries, before it is
// opened, and returns them (nil if they do not parse) for keyVersion once it has been.
func fieldsInfo(m *pubsub.Message) (Info, *envelope.Envelope) {
	info := Info{Encrypted: true, Fields: true, KeyID: m.Metadata[envelope.HeaderKey], manifest: m.Metadata[fields.ManifestKey]}
	env, err := envelope.Parse(withoutManifest(m.Metadata))
	if err != nil {
		return info, nil
	}
	info.KeyID = env.KeyID
	return info, env
}

// keyVersion is the version of the key-encryption key that wrapped env's data key, as the
// keyring reported it when it unwrapped the key. The wrapped key is the key service's own
// format, which only the keyring reads; the field opener unwraps through o.keys, so a key
// it unwrapped is in that cache, with its DataKey.Version. 0 (unknown, as for a whole-body
// message) if env did not parse, if the data key was not unwrapped (the message failed
// before, or the key service refused it) or if it has left the cache since (a batch with
// more data keys than the cache holds).
func (o *Opener) keyVersion(env *envelope.Envelope) int {
	if env == nil {
		return 0
	}
	if k := o.keys.Cached(env.KeyID, env.Wrapped); k != nil {
		return k.Version
	}
	return 0
}

// withoutManifest returns md without the field manifest, to read the envelope entries.
func withoutManifest(md map[string]string) map[string]string {
	out := make(map[string]string, len(md))
	for k, v := range md {
		if k != fields.ManifestKey {
			out[k] = v
		}
	}
	return out
}
