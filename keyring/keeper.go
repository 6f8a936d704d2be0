package keyring

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hashicorp/vault/api"
	"gocloud.dev/gcerrors"
	"gocloud.dev/secrets"

	"github.com/pubcrypt/pubcrypt/internal/wire"
)

// KeeperOptions configures OpenKeeper and NewKeeper. The zero value is useful for
// OpenKeeper.
type KeeperOptions struct {
	// KeyID names the key-encryption key in envelopes: 1 to 128 characters from
	// [A-Za-z0-9._-]. The receive side must use the same KeyID as the send side. Empty:
	// OpenKeeper derives it from the URL (see DefaultKeeperKeyID); NewKeeper requires it.
	KeyID string
	// Timeout bounds each call to the keeper; default 10s. (gocloud's hashivault driver
	// ignores the context: there the Vault client's own timeout applies.)
	Timeout time.Duration
	// InProcess says that the keeper decrypts in this process with no service behind it
	// (localsecrets' base64key://), so that a Decrypt error gocloud leaves unclassified
	// can only be the ciphertext's: ErrInvalidWrappedKey rather than an error of the
	// environment. OpenKeeper sets it for base64key:// URLs. Do not set it for a keeper
	// that talks to a service: an outage would then count as a fault of the message.
	InProcess bool
}

// Keeper is a Keyring whose key-encryption key is a gocloud.dev/secrets keeper: AWS KMS
// (awskms://), Google Cloud KMS (gcpkms://), Azure Key Vault (azurekeyvault://), Vault
// Transit (hashivault://) or a local key (base64key://). Data keys are generated here
// (crypto/rand, DataKeySize bytes) and wrapped by the keeper's Encrypt, so the
// key-encryption key never leaves the key service; with DataKeys and UnwrapCache a stream
// costs about one key-service call per side. It is safe for concurrent use.
//
// The keyring imports no driver: the application links the ones it opens, as with any
// gocloud URL (import _ "gocloud.dev/secrets/awskms").
//
// Wrapped keys have the form "kp1:" followed by the keeper's ciphertext in unpadded
// base64url: printable ASCII of at most 1024 bytes, the limit of an envelope entry, so a
// keeper's ciphertext may be at most 765 bytes (RSA keys up to 4096 bits fit). The "1" is
// the version of this format, not of the key.
type Keeper struct {
	keeper    *secrets.Keeper
	keyID     string
	timeout   time.Duration
	inProcess bool
	owned     bool // opened by OpenKeeper: Close closes the keeper
	calls     atomic.Int64
}

var _ Keyring = (*Keeper)(nil)

const (
	keeperPrefix = "kp1:"
	// maxWrappedLen is the longest envelope entry value.
	maxWrappedLen = wire.MaxValueLen
	// maxKeeperCiphertext is the longest keeper ciphertext whose wrapped form fits.
	maxKeeperCiphertext = (maxWrappedLen - len(keeperPrefix)) * 6 / 8
)

// OpenKeeper opens the keeper at url with gocloud's default URL mux (the drivers the
// program links) and returns a Keyring around it; Close closes the keeper. Errors never
// show a password in the URL, nor the host of a base64key:// URL (the key itself) or of
// a scheme not known here.
func OpenKeeper(ctx context.Context, url string, opts KeeperOptions) (*Keeper, error) {
	u, err := parseKeeperURL(url)
	if err != nil {
		return nil, err
	}
	if opts.KeyID == "" {
		opts.KeyID = DefaultKeeperKeyID(u)
	}
	if u.Scheme == "base64key" {
		opts.InProcess = true
	}
	if err := checkKeeperOptions(&opts); err != nil {
		return nil, err
	}
	sk, err := secrets.OpenKeeper(ctx, url)
	if err != nil {
		return nil, &OptionError{Option: "keeper URL", Reason: "does not open: " + scrub(err.Error(), urlSecrets(url, u)...)}
	}
	k := newKeeper(sk, opts)
	k.owned = true
	return k, nil
}

// NewKeeper returns a Keyring around a keeper the caller opened (gocloud's constructors
// are the escape hatch for clients the URL cannot describe). opts.KeyID is required. The
// caller keeps ownership: Close does not close sk.
func NewKeeper(sk *secrets.Keeper, opts KeeperOptions) (*Keeper, error) {
	if sk == nil {
		return nil, &OptionError{Option: "NewKeeper", Reason: "needs a *secrets.Keeper"}
	}
	if opts.KeyID == "" {
		return nil, &OptionError{Option: "KeeperOptions.KeyID", Reason: "is required (the name envelopes give the key-encryption key)"}
	}
	if err := checkKeeperOptions(&opts); err != nil {
		return nil, err
	}
	return newKeeper(sk, opts), nil
}

func newKeeper(sk *secrets.Keeper, opts KeeperOptions) *Keeper {
	return &Keeper{keeper: sk, keyID: opts.KeyID, timeout: opts.Timeout, inProcess: opts.InProcess}
}

func checkKeeperOptions(opts *KeeperOptions) error {
	if !wire.ValidKeyID(opts.KeyID) {
		return &OptionError{Option: "KeeperOptions.KeyID", Reason: fmt.Sprintf("%q is not 1 to 128 characters from [A-Za-z0-9._-]", opts.KeyID)}
	}
	if opts.Timeout < 0 {
		return &OptionError{Option: "KeeperOptions.Timeout", Reason: fmt.Sprintf("%v is negative", opts.Timeout)}
	}
	if opts.Timeout == 0 {
		opts.Timeout = 10 * time.Second
	}
	return nil
}

func parseKeeperURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		// url.Parse's error quotes the URL.
		return nil, &OptionError{Option: "keeper URL", Reason: "is not a URL"}
	}
	if u.Scheme == "" {
		return nil, &OptionError{Option: "keeper URL", Reason: "has no scheme (awskms://, gcpkms://, azurekeyvault://, hashivault://, base64key://)"}
	}
	return u, nil
}

// urlSecrets are the parts of a keeper URL that must not reach an error: any password,
// and the host unless the scheme is one whose host names a service or a key rather than
// holding one (a base64key:// URL's host is the key; so may be a misspelt scheme's).
func urlSecrets(raw string, u *url.URL) []string {
	var out []string
	switch u.Scheme {
	case "awskms", "gcpkms", "azurekeyvault", "hashivault":
	default:
		if u.Host != "" {
			out = append(out, raw, u.Host)
		}
	}
	if pw, ok := u.User.Password(); ok && pw != "" {
		out = append(out, raw, pw)
	}
	return out
}

// DefaultKeeperKeyID is the key ID OpenKeeper gives a keeper URL when KeeperOptions.KeyID
// is empty: the scheme, "-", and 16 hex digits of SHA-256 over the scheme, host and path
// (the key's name, without the query, whose region, endpoint or credentials settings may
// differ between the send and the receive side). It is stable and short and shows
// nothing of a base64key:// URL's key. Two URLs that name one key differently (an AWS key
// ID and its ARN or alias) get different IDs: set KeyID on both sides then.
func DefaultKeeperKeyID(u *url.URL) string {
	h := sha256.Sum256([]byte("pubcrypt keeper key ID\x00" + strings.ToLower(u.Scheme) + "\x00" + u.Host + "\x00" + strings.TrimPrefix(u.Path, "/")))
	id := strings.ToLower(u.Scheme)
	if !wire.ValidKeyID(id) || len(id) > 64 {
		id = "keeper"
	}
	return id + "-" + hex.EncodeToString(h[:8])
}

// KeyID returns the key ID written into envelopes for this keeper's key.
func (k *Keeper) KeyID() string { return k.keyID }

// Calls returns the number of Encrypt and Decrypt calls the keyring has made to the
// keeper (a driver may retry one call on the network).
func (k *Keeper) Calls() int64 { return k.calls.Load() }

// Close closes the keeper if OpenKeeper opened it.
func (k *Keeper) Close() error {
	if !k.owned {
		return nil
	}
	return k.keeper.Close()
}

// GenerateDataKey draws a new data key from crypto/rand and wraps it with the keeper.
func (k *Keeper) GenerateDataKey(ctx context.Context) (*DataKey, error) {
	const op = "generate data key"
	key := make([]byte, DataKeySize)
	rand.Read(key) // never fails (crypto/rand since Go 1.24)
	ctx, cancel := context.WithTimeout(ctx, k.timeout)
	defer cancel()
	k.calls.Add(1)
	ct, err := k.keeper.Encrypt(ctx, key)
	if err != nil {
		return nil, k.fail(ctx, op, k.keyID, key, "", err)
	}
	if len(ct) == 0 || len(ct) > maxKeeperCiphertext {
		// The key's type makes ciphertexts that no envelope can carry: every data key
		// would fail alike, a matter of configuration.
		return nil, &Error{Op: op, KeyID: k.keyID, Kind: ErrInvalidInput, Err: fmt.Errorf("the keeper returned a %d-byte ciphertext; 1 to %d bytes fit an envelope entry", len(ct), maxKeeperCiphertext)}
	}
	return &DataKey{Plaintext: key, Wrapped: keeperPrefix + base64.RawURLEncoding.EncodeToString(ct), KeyID: k.keyID}, nil
}

// UnwrapDataKey decrypts a data key that GenerateDataKey of a keyring with the same key
// ID wrapped. keyID and wrapped usually come from a message: both are checked before
// the keeper is called.
func (k *Keeper) UnwrapDataKey(ctx context.Context, keyID, wrapped string) ([]byte, error) {
	const op = "unwrap data key"
	ct, err := parseKeeperWrapped(wrapped)
	if err != nil {
		return nil, &Error{Op: op, KeyID: keyID, Kind: ErrInvalidWrappedKey, Err: err}
	}
	if keyID != k.keyID {
		// Not this keyring's key: the receiver lacks a keyring for it, a matter of
		// configuration (as a Vault transit key that does not exist).
		return nil, &Error{Op: op, KeyID: keyID, Kind: ErrKeyNotFound, Err: fmt.Errorf("this keyring holds the key %q only", k.keyID)}
	}
	ctx, cancel := context.WithTimeout(ctx, k.timeout)
	defer cancel()
	k.calls.Add(1)
	pt, err := k.keeper.Decrypt(ctx, ct)
	if err != nil {
		return nil, k.fail(ctx, op, keyID, nil, wrapped, err)
	}
	if len(pt) != DataKeySize {
		// Decrypted, but not to a data key: something else was encrypted under this key.
		return nil, &Error{Op: op, KeyID: keyID, Kind: ErrInvalidWrappedKey, Err: fmt.Errorf("the keeper decrypted it to %d bytes, not a %d-byte data key", len(pt), DataKeySize)}
	}
	return pt, nil
}

// parseKeeperWrapped parses "kp1:" + unpadded base64url, accepting one spelling only.
func parseKeeperWrapped(wrapped string) ([]byte, error) {
	body, ok := strings.CutPrefix(wrapped, keeperPrefix)
	if !ok {
		return nil, fmt.Errorf("wrapped key does not start with %q", keeperPrefix)
	}
	if len(wrapped) > maxWrappedLen {
		return nil, fmt.Errorf("wrapped key of %d bytes is longer than %d", len(wrapped), maxWrappedLen)
	}
	ct, err := base64.RawURLEncoding.Strict().DecodeString(body)
	if err != nil || len(ct) == 0 {
		return nil, fmt.Errorf("wrapped key is not %q followed by unpadded base64url", keeperPrefix)
	}
	return ct, nil
}

// fail turns a keeper's error into an *Error. The kind comes from the error's type or
// code, never its text: gocloud's gcerrors.Code first, refined where gocloud answers
// Unknown for errors whose meaning the driver's own error carries (AWS's error codes,
// Vault's answers through hashivault://). The cause keeps the chain for errors.As, but
// its text has the data key and the wrapped key taken out.
func (k *Keeper) fail(ctx context.Context, op, keyID string, plaintext []byte, wrapped string, err error) error {
	unwrap := op == "unwrap data key"
	e := &Error{Op: op, KeyID: keyID}
	secretsOut := []string{wrapped}
	if plaintext != nil {
		secretsOut = append(secretsOut,
			base64.StdEncoding.EncodeToString(plaintext), base64.RawStdEncoding.EncodeToString(plaintext),
			base64.URLEncoding.EncodeToString(plaintext), base64.RawURLEncoding.EncodeToString(plaintext),
			hex.EncodeToString(plaintext))
	}
	var re *api.ResponseError
	if errors.As(err, &re) {
		// hashivault:// answers every Vault error with gcerrors.Unknown; the Vault keyring
		// already knows what Vault's answers mean.
		ve := &VaultError{StatusCode: re.StatusCode}
		if re.RawError {
			ve.Errors = []string{"unparsable error answer"}
		} else {
			for _, s := range re.Errors {
				for _, line := range cleanVaultError(s) {
					ve.Errors = append(ve.Errors, scrub(line, secretsOut...))
				}
			}
		}
		e.Err = ve
		e.Kind = kindOf(op, ve)
		return e
	}
	e.Err = &keeperError{msg: scrub(err.Error(), secretsOut...), err: err}
	e.Kind = keeperKind(ctx, unwrap, k.inProcess, err)
	return e
}

func keeperKind(ctx context.Context, unwrap, inProcess bool, err error) error {
	if ctx.Err() != nil {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return ErrUnavailable
		}
		return nil // the caller gave up
	}
	if kind, ok := awsKind(err, unwrap); ok {
		return kind
	}
	switch gcerrors.Code(err) {
	case gcerrors.NotFound:
		return ErrKeyNotFound
	case gcerrors.FailedPrecondition:
		// AWS: the key is disabled or pending deletion; the key is there but may not be
		// used, which is mended where a missing key is.
		return ErrKeyNotFound
	case gcerrors.PermissionDenied:
		return ErrPermissionDenied
	case gcerrors.InvalidArgument:
		if unwrap {
			return ErrInvalidWrappedKey
		}
		return ErrInvalidInput // the key cannot encrypt (a signing key, say)
	case gcerrors.Internal, gcerrors.ResourceExhausted, gcerrors.DeadlineExceeded, gcerrors.Unimplemented:
		return ErrUnavailable
	}
	var ue *url.Error
	var ne net.Error
	if errors.As(err, &ue) || errors.As(err, &ne) {
		return ErrUnavailable
	}
	if unwrap && inProcess {
		return ErrInvalidWrappedKey
	}
	return nil // unclassified: an error of the environment (Error.FaultClass)
}

// awsKind classifies an AWS API error by its error code, reached through the method of
// smithy.APIError without linking the AWS SDK into this package. gocloud's awskms maps
// only some codes and answers Unknown for the others, access denied among them (which is
// also what KMS answers for a ciphertext under a key that is gone or not the caller's).
func awsKind(err error, unwrap bool) (error, bool) {
	var ae interface{ ErrorCode() string }
	if !errors.As(err, &ae) {
		return nil, false
	}
	switch ae.ErrorCode() {
	case "AccessDeniedException", "UnrecognizedClientException", "InvalidSignatureException",
		"ExpiredTokenException", "IncompleteSignature", "MissingAuthenticationToken", "InvalidClientTokenId":
		return ErrPermissionDenied, true
	case "NotFoundException", "DisabledException", "KMSInvalidStateException":
		return ErrKeyNotFound, true
	case "InvalidCiphertextException", "IncorrectKeyException", "InvalidKeyUsageException", "ValidationException":
		if unwrap {
			return ErrInvalidWrappedKey, true
		}
		return ErrInvalidInput, true
	case "KMSInternalException", "InternalFailure", "ServiceUnavailable", "DependencyTimeoutException",
		"KeyUnavailableException", "ThrottlingException", "LimitExceededException":
		return ErrUnavailable, true
	}
	return nil, false
}

// keeperError is a keeper's error with secrets taken out of its text; errors.As still
// reaches the driver's error (gocloud's As).
type keeperError struct {
	msg string
	err error
}

func (e *keeperError) Error() string { return e.msg }
func (e *keeperError) Unwrap() error { return e.err }

// scrub replaces each non-empty secret in s.
func scrub(s string, secrets ...string) string {
	for _, x := range secrets {
		if x != "" {
			s = strings.ReplaceAll(s, x, "[redacted]")
		}
	}
	return s
}
