package keyring

import (
	"container/list"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"

	"golang.org/x/sync/singleflight"

	"github.com/pubcrypt/pubcrypt/fault"
)

// Crypto-shredding: a subject (a customer, a user: whatever a message is about and may
// have to be erased) gets a Vault transit key of its own, and the protected values of its
// messages are encrypted under that key alone. Forgetting the subject destroys every
// version of that key that ever encrypted anything, so every message of the subject, on
// the broker, in backups and in data lakes, can no longer be read, while other subjects'
// messages decrypt as before. docs/FIELDS.md section 12 specifies it.
const (
	// SubjectKeyPrefix starts the name of every subject key: "pubcrypt-subject-" and 32
	// lowercase hex digits, the first 16 bytes of HMAC-SHA-256 of the subject ID under
	// the naming key. The name is all that travels with a message: the subject ID is in
	// no new place, and one subject's messages are linkable to each other only.
	SubjectKeyPrefix = "pubcrypt-subject-"
	// DefaultSubjectNamingKey is the transit key whose HMAC (version 1, always) names
	// subject keys. It must exist before a producer starts; rotating it would give every
	// subject a new key name, so pubcrypt always asks for version 1.
	DefaultSubjectNamingKey = "pubcrypt-subjects"
	// DefaultMaxSubjects is SubjectOptions.MaxSubjects when it is zero.
	DefaultMaxSubjects = 10000
)

// ErrShredded: the message is of a subject that was forgotten (Subjects.Forget): the key
// versions that protected it were destroyed in the key service, so no one can decrypt it
// again. Message: the same message never passes, and it is no outage.
var ErrShredded = fault.New(fault.Message, "the message's subject was forgotten: its key was destroyed")

// IsSubjectKey reports whether name is the name of a subject key.
func IsSubjectKey(name string) bool {
	rest, ok := strings.CutPrefix(name, SubjectKeyPrefix)
	if !ok || len(rest) != 32 {
		return false
	}
	for _, c := range rest {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// shredded is the kind of a refusal for keyID: ErrVersionTooOld on a subject key means
// the subject was forgotten (Forget raises the minimum versions above every version that
// was used, then destroys them), any other kind is kept. A subject key that does not
// exist at all stays ErrKeyNotFound, an environment fault: Forget never deletes a key, so
// a missing one is a wrong mount or server, not an erasure, and must not get messages
// acknowledged.
func shredded(keyID string, kind error) error {
	if kind == ErrVersionTooOld && IsSubjectKey(keyID) {
		return ErrShredded
	}
	return kind
}

// SubjectOptions configure NewSubjects. The zero value is useful.
type SubjectOptions struct {
	// NamingKey is the transit key whose HMAC names subject keys; "" means
	// DefaultSubjectNamingKey. Producers need "update" on MOUNT/hmac/NAMINGKEY.
	NamingKey string
	// Reuse is the data-key policy of each subject: the send side keeps one data key per
	// subject for Reuse.MaxAge (default 5 minutes). It is also the bound on a stale
	// producer: after Forget, a producer that still holds a subject's data key keeps
	// encrypting under it for at most MaxAge, and what it sends then is unreadable too.
	Reuse ReusePolicy
	// MaxSubjects bounds the subjects whose key names and data keys are kept in memory,
	// least recently used first out; 0 means DefaultMaxSubjects.
	MaxSubjects int
}

// Subjects gives each subject a transit key of its own on a Vault keyring: it names the
// key (an HMAC of the subject ID, batched, cached), creates it on first use, and keeps a
// DataKeys per subject. It is safe for concurrent use.
type Subjects struct {
	v     *Vault
	opts  SubjectOptions
	flies singleflight.Group

	mu    sync.Mutex
	lru   *list.List               // of *subjectEntry, most recently used first
	names map[string]*list.Element // by subject
	keys  map[string]*list.Element // by key name
}

type subjectEntry struct {
	subject, key string
	dk           *DataKeys
}

// NewSubjects returns the subject keys of v's transit mount.
func NewSubjects(v *Vault, opts SubjectOptions) (*Subjects, error) {
	if v == nil {
		return nil, errors.New("keyring: NewSubjects needs a Vault keyring")
	}
	if opts.NamingKey == "" {
		opts.NamingKey = DefaultSubjectNamingKey
	}
	if !transitName.MatchString(opts.NamingKey) || IsSubjectKey(opts.NamingKey) {
		return nil, &OptionError{Option: "SubjectOptions.NamingKey", Reason: fmt.Sprintf("%q is not a valid transit key name for the naming key", opts.NamingKey)}
	}
	if opts.MaxSubjects <= 0 {
		opts.MaxSubjects = DefaultMaxSubjects
	}
	if _, err := NewDataKeys(v, opts.Reuse); err != nil {
		return nil, err
	}
	return &Subjects{v: v, opts: opts, lru: list.New(), names: map[string]*list.Element{}, keys: map[string]*list.Element{}}, nil
}

// KeyNames returns the key name of each subject, in order, asking Vault in one HMAC
// request for the subjects it has not named recently, and makes sure their keys exist
// (one create request per subject new to this process). An empty subject is refused
// (ErrInvalidInput, of class fault.Message: the message names no subject).
func (s *Subjects) KeyNames(ctx context.Context, subjects []string) ([]string, error) {
	out := make([]string, len(subjects))
	var missing []string
	seen := map[string]bool{}
	s.mu.Lock()
	for i, subj := range subjects {
		if e := s.names[subj]; e != nil {
			s.lru.MoveToFront(e)
			out[i] = e.Value.(*subjectEntry).key
		} else if !seen[subj] {
			seen[subj] = true
			missing = append(missing, subj)
		}
	}
	s.mu.Unlock()
	for _, subj := range missing {
		if subj == "" {
			return nil, fault.Mark(&Error{Op: "name subject key", KeyID: s.opts.NamingKey, Kind: ErrInvalidInput, Err: errors.New("empty subject")}, fault.Message)
		}
	}
	if len(missing) > 0 {
		keys, err := s.name(ctx, missing)
		if err != nil {
			return nil, err
		}
		if err := s.createAll(ctx, keys); err != nil {
			return nil, err
		}
		s.mu.Lock()
		for i, subj := range missing {
			s.put(subj, keys[i])
		}
		s.mu.Unlock()
		named := make(map[string]string, len(missing))
		for i, subj := range missing {
			named[subj] = keys[i]
		}
		for i, subj := range subjects {
			if out[i] == "" {
				out[i] = named[subj]
			}
		}
	}
	return out, nil
}

// put records subject's key name; s.mu must be held.
func (s *Subjects) put(subject, key string) {
	if e := s.names[subject]; e != nil {
		s.lru.MoveToFront(e)
		return
	}
	e := s.lru.PushFront(&subjectEntry{subject: subject, key: key})
	s.names[subject], s.keys[key] = e, e
	for s.lru.Len() > s.opts.MaxSubjects {
		last := s.lru.Back()
		s.lru.Remove(last)
		se := last.Value.(*subjectEntry)
		delete(s.names, se.subject)
		delete(s.keys, se.key)
	}
}

// name asks Vault for the HMAC of each subject under version 1 of the naming key.
func (s *Subjects) name(ctx context.Context, subjects []string) ([]string, error) {
	const op = "name subject key"
	in := make([]map[string]string, len(subjects))
	for i, subj := range subjects {
		in[i] = map[string]string{"input": base64.StdEncoding.EncodeToString([]byte(subj))}
	}
	keys := make([]string, 0, len(subjects))
	for start := 0; start < len(in); start += maxBatchItems {
		chunk := in[start:min(len(in), start+maxBatchItems)]
		body, err := json.Marshal(map[string]any{"batch_input": chunk, "key_version": 1})
		if err != nil {
			return nil, &Error{Op: op, KeyID: s.opts.NamingKey, Err: err}
		}
		var answer struct {
			Data struct {
				BatchResults []struct {
					HMAC  string `json:"hmac"`
					Error string `json:"error"`
				} `json:"batch_results"`
			} `json:"data"`
		}
		_, err = s.v.do(ctx, http.MethodPost, "hmac/"+s.opts.NamingKey+"/sha2-256", body, &answer)
		results := answer.Data.BatchResults
		if err != nil {
			return nil, s.v.fail(ctx, op, s.opts.NamingKey, 1, "", err)
		}
		if len(results) != len(chunk) {
			return nil, &Error{Op: op, KeyID: s.opts.NamingKey, Kind: ErrUnavailable, Err: fmt.Errorf("vault answered %d hmac results for %d subjects", len(results), len(chunk))}
		}
		for _, r := range results {
			mac, ok := strings.CutPrefix(r.HMAC, "vault:v1:")
			raw, derr := base64.StdEncoding.DecodeString(mac)
			if r.Error != "" || !ok || derr != nil || len(raw) != 32 {
				return nil, &Error{Op: op, KeyID: s.opts.NamingKey, Version: 1, Kind: ErrUnavailable, Err: errors.New("vault returned no version-1 HMAC-SHA-256 for a subject")}
			}
			keys = append(keys, SubjectKeyPrefix+hex.EncodeToString(raw[:16]))
		}
	}
	return keys, nil
}

// DataKeys returns the send side's data keys of the subject key named key (from
// KeyNames), creating the transit key in Vault the first time a data key is needed and
// it does not exist ("update" on MOUNT/keys/pubcrypt-subject-*, with the key type as the
// only allowed parameter: terraform/vault's producer policy).
func (s *Subjects) DataKeys(key string) (*DataKeys, error) {
	if !IsSubjectKey(key) {
		return nil, &Error{Op: "subject data keys", KeyID: key, Kind: ErrInvalidInput, Err: errors.New("not a subject key name")}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.keys[key]; e != nil {
		se := e.Value.(*subjectEntry)
		if se.dk == nil {
			dk, err := NewDataKeys(&subjectKeyring{s: s, key: key}, s.opts.Reuse)
			if err != nil {
				return nil, err
			}
			se.dk = dk
		}
		return se.dk, nil
	}
	// Named long ago and evicted since, or named by a message (re-encryption): kept
	// under its key alone.
	dk, err := NewDataKeys(&subjectKeyring{s: s, key: key}, s.opts.Reuse)
	if err != nil {
		return nil, err
	}
	s.put("\x00"+key, key)
	s.keys[key].Value.(*subjectEntry).dk = dk
	return dk, nil
}

// subjectKeyring generates data keys under one subject key, creating the key if Vault
// has none of that name yet; it unwraps like the Vault keyring.
type subjectKeyring struct {
	s   *Subjects
	key string
}

func (k *subjectKeyring) GenerateDataKey(ctx context.Context) (*DataKey, error) {
	dk, err := k.s.v.generateDataKey(ctx, k.key)
	if !errors.Is(err, ErrKeyNotFound) {
		return dk, err
	}
	if _, err, _ := k.s.flies.Do(k.key, func() (any, error) { return nil, k.s.create(ctx, k.key) }); err != nil {
		return nil, err
	}
	return k.s.v.generateDataKey(ctx, k.key)
}

func (k *subjectKeyring) UnwrapDataKey(ctx context.Context, keyID, wrapped string) ([]byte, error) {
	return k.s.v.UnwrapDataKey(ctx, keyID, wrapped)
}

// create makes the subject key (aes256-gcm96); for a key that exists it changes
// nothing. A token refused the write may still use a key someone else created.
func (s *Subjects) create(ctx context.Context, key string) error {
	// Not write: Vault answers a creation with the key or with no content, as versions go.
	_, err := s.v.do(ctx, http.MethodPost, "keys/"+key, []byte(`{"type":"aes256-gcm96"}`), &struct{}{})
	if err == nil {
		slog.Debug("keyring: subject key created", "key", key)
		return nil
	}
	e := s.v.fail(ctx, "create subject key", key, 0, "", err)
	if errors.Is(e, ErrPermissionDenied) && !errors.Is(e, ErrTokenInvalid) {
		// Refused because it exists (a producer holds "create" only) or because this
		// token may not create keys at all: asking for a data key tells which.
		if _, ierr := s.v.generateDataKey(ctx, key); ierr == nil {
			return nil
		} else if !errors.Is(ierr, ErrKeyNotFound) {
			return ierr
		}
	}
	return e
}

// createAll creates the keys, a few requests at a time.
func (s *Subjects) createAll(ctx context.Context, keys []string) error {
	errs := make([]error, len(keys))
	sem := make(chan struct{}, maxInFlight)
	var wg sync.WaitGroup
	for i, key := range keys {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			_, errs[i], _ = s.flies.Do(key, func() (any, error) { return nil, s.create(ctx, key) })
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Lookup names subject's key and says whether it exists, creating and destroying
// nothing (a dry run of Forget).
func (s *Subjects) Lookup(ctx context.Context, subject string) (key string, exists bool, err error) {
	if subject == "" {
		return "", false, &Error{Op: "look up subject key", KeyID: s.opts.NamingKey, Kind: ErrInvalidInput, Err: errors.New("empty subject")}
	}
	names, err := s.name(ctx, []string{subject})
	if err != nil {
		return "", false, err
	}
	_, err = s.v.KeyInfo(ctx, names[0])
	if errors.Is(err, ErrKeyNotFound) {
		return names[0], false, nil
	}
	return names[0], err == nil, err
}

// Forgotten is what Forget did.
type Forgotten struct {
	// Key is the subject key's name (never the subject ID).
	Key string
	// Destroyed is how many key versions were destroyed: every version that protected a
	// message. 0 when the subject had no key (nothing of it was ever sent).
	Destroyed int
	// Latest is the version the key now has, which nothing was encrypted under.
	Latest int
}

// Forget crypto-shreds subject: it rotates the subject's key, raises its minimum
// decryption and encryption versions to the new version and trims every older version
// out of Vault (MOUNT/keys/KEY/rotate, /config, /trim). Every message protected under
// those versions then fails with ErrShredded, on any consumer, for good; other subjects
// are untouched. The key's name stays, as a tombstone: a missing key is an environment
// fault, never an erasure.
//
// A producer that already holds one of the subject's data keys keeps using it for at
// most SubjectOptions.Reuse.MaxAge (what it sends is unreadable as well), and a consumer
// that has one unwrapped keeps it for its UnwrapCache TTL; a message sent about the
// subject afterwards is new data, under the new version, and decrypts. Vault's own
// backups taken before Forget still hold the destroyed versions until they expire.
//
// It needs "read" on MOUNT/keys/pubcrypt-subject-*, "update" on its rotate, config and
// trim paths and on the naming key's HMAC: the pubcrypt-forget policy of terraform/vault,
// which no producer or consumer holds. Each call is logged (slog, Info, "subject
// forgotten") with the key name, never the subject.
func (s *Subjects) Forget(ctx context.Context, subject string) (Forgotten, error) {
	if subject == "" {
		return Forgotten{}, &Error{Op: "forget subject", KeyID: s.opts.NamingKey, Kind: ErrInvalidInput, Err: errors.New("empty subject")}
	}
	// Named without creating the key: a subject that has none has nothing to destroy.
	names, err := s.name(ctx, []string{subject})
	if err != nil {
		return Forgotten{}, err
	}
	key := names[0]
	f := Forgotten{Key: key}
	info, err := s.v.KeyInfo(ctx, key)
	if errors.Is(err, ErrKeyNotFound) {
		slog.InfoContext(ctx, "subject forgotten", "key", key, "destroyed_versions", 0, "note", "the subject had no key: nothing of it was encrypted")
		return f, nil
	}
	if err != nil {
		return f, err
	}
	if err := s.v.RotateKey(ctx, key); err != nil {
		return f, err
	}
	f.Latest = info.LatestVersion + 1
	for _, w := range []struct {
		path string
		body map[string]any
	}{
		{"keys/" + key + "/config", map[string]any{"min_decryption_version": f.Latest, "min_encryption_version": f.Latest}},
		{"keys/" + key + "/trim", map[string]any{"min_available_version": f.Latest}},
	} {
		body, _ := json.Marshal(w.body)
		if _, err := s.v.do(ctx, http.MethodPost, w.path, body, &struct{}{}); err != nil {
			return f, s.v.fail(ctx, "forget subject", key, f.Latest, "", err)
		}
	}
	s.v.keyInfos().drop(key)
	f.Destroyed = info.LatestVersion - max(info.MinAvailableVersion, 1) + 1
	// This process's own data keys of the subject go too.
	s.mu.Lock()
	if e := s.names[subject]; e != nil {
		if dk := e.Value.(*subjectEntry).dk; dk != nil {
			dk.Expire()
		}
	}
	s.mu.Unlock()
	slog.InfoContext(ctx, "subject forgotten", "key", key, "destroyed_versions", f.Destroyed, "latest_version", f.Latest)
	return f, nil
}
