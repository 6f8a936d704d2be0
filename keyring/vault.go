package keyring

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hashicorp/vault/api"
)

// The transit key names pubcrypt uses when none is given: the key that wraps data keys
// and encrypts transit fields, the derived convergent key of deterministic fields, and
// the key from which format-preserving-encryption keys are derived. terraform/vault
// creates them; the CLI, enc+ URLs and the demo default to them.
const (
	DefaultKey              = "pubcrypt"
	DefaultDeterministicKey = "pubcrypt-det"
	DefaultFPEKey           = "pubcrypt-fpe"
)

// VaultOptions configures NewVault.
type VaultOptions struct {
	// Mount is the path of the transit secrets engine; default "transit".
	Mount string
	// Key is the name of the transit key that wraps data keys. Required.
	Key string
	// Client is the Vault client to copy address, TLS, token and namespace from. Nil: a
	// client configured from Vault's own environment variables (VAULT_ADDR, VAULT_TOKEN,
	// VAULT_NAMESPACE, VAULT_CACERT, ...). The keyring never modifies it.
	Client *api.Client
	// Timeout bounds each request to Vault; default 10s. A request that waits for a
	// login waits within it.
	Timeout time.Duration
	// Auth says how the keyring obtains and renews its token; the zero value uses the
	// token of Client or VAULT_TOKEN, renewed if it is renewable.
	Auth VaultAuth
	// FPEMount is where pubcrypt's Vault FPE plugin (vaultplugin/fpe) is enabled, for
	// field mode fpe(vault) (FPEEncrypt, FPEDecrypt); default DefaultFPEMount.
	FPEMount string
}

// Vault is a Keyring backed by HashiCorp Vault's Transit engine: data keys come from
// transit/datakey/plaintext and are unwrapped by transit/decrypt, so the key-encryption key
// never leaves Vault. It is safe for concurrent use.
type Vault struct {
	client   *api.Client
	mount    string
	key      string
	timeout  time.Duration
	calls    atomic.Int64
	infos    keyInfoCache   // key configs read by FPEKey, kept ~30 s
	auth     *session       // the token: static, from a file, or from logins
	https    []*http.Client // the HTTP clients of the requests and of the logins, for Close
	fpeMount string         // VaultOptions.FPEMount
}

var _ Keyring = (*Vault)(nil)

// transitName is the name pattern Vault's transit engine accepts for keys
// (framework.GenericNameRegex). Checking it locally also keeps a key ID read from a
// message from steering a request to another Vault path.
var transitName = regexp.MustCompile(`^\w(?:[\w.-]*\w)?$`)

// NewVault returns a Vault keyring for the transit key opts.Key.
func NewVault(opts VaultOptions) (*Vault, error) {
	if opts.Key == "" {
		return nil, &OptionError{Option: "VaultOptions.Key", Reason: "is required (the name of the transit key)"}
	}
	if !transitName.MatchString(opts.Key) {
		return nil, &OptionError{Option: "VaultOptions.Key", Reason: fmt.Sprintf("%q is not a valid transit key name (letters, digits, _ . -)", opts.Key)}
	}
	fm := strings.Trim(opts.FPEMount, "/")
	if fm == "" {
		fm = DefaultFPEMount
	}
	if !validMount(fm) {
		return nil, &OptionError{Option: "VaultOptions.FPEMount", Reason: fmt.Sprintf("%q is not a valid mount path", opts.FPEMount)}
	}
	v, err := openVault("VaultOptions", opts.Mount, "transit", opts.Key, opts.Timeout, opts.Client, opts.Auth)
	if err != nil {
		return nil, err
	}
	v.fpeMount = fm
	return v, nil
}

// OptionError is the error of NewVault and NewTransform for an option that cannot be
// used. Option names it ("VaultOptions.Mount"), so that a caller that builds the options
// from its own configuration can say which setting is wrong without reading the text.
type OptionError struct {
	Option string // "VaultOptions.Key", "TransformOptions.Role", ...
	Reason string // "is required", "\"a/b\" is not a valid transit key name", ...
}

func (e *OptionError) Error() string { return "keyring: " + e.Option + " " + e.Reason }

// openVault checks the mount and timeout shared by the options of NewVault and
// NewTransform (named optsType in errors), applies their defaults and builds the
// keyring's own counting client.
func openVault(optsType, mount, defaultMount, key string, timeout time.Duration, from *api.Client, auth VaultAuth) (*Vault, error) {
	m := strings.Trim(mount, "/")
	if mount == "" {
		m = defaultMount
	}
	if !validMount(m) {
		return nil, &OptionError{Option: optsType + ".Mount", Reason: fmt.Sprintf("%q is not a valid mount path", mount)}
	}
	if timeout < 0 {
		return nil, &OptionError{Option: optsType + ".Timeout", Reason: fmt.Sprintf("%v is negative", timeout)}
	}
	if timeout == 0 {
		timeout = 10 * time.Second
	}
	login, err := auth.loginMethod(optsType)
	if err != nil {
		return nil, err
	}
	v := &Vault{mount: m, key: key, timeout: timeout}
	client, err := v.newClient(from, login, auth.TokenFile)
	if err != nil {
		return nil, err
	}
	v.client = client
	return v, nil
}

func validMount(m string) bool {
	if m == "" || strings.ContainsAny(m, "?#%\\ \t\r\n") {
		return false
	}
	for _, seg := range strings.Split(m, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return false
		}
	}
	return true
}

// newClient builds the keyring's own client, so that counting requests, a short retry
// budget, the timeout and the token's renewal do not change a client the caller shares
// with other code. It also builds v.auth, which puts the current token on each request.
func (v *Vault) newClient(from *api.Client, login api.AuthMethod, tokenFile string) (*api.Client, error) {
	var cfg *api.Config
	if from != nil {
		cfg = from.CloneConfig()
	} else {
		cfg = api.DefaultConfig()
	}
	if cfg.Error != nil {
		return nil, fmt.Errorf("keyring: vault client configuration: %w", cfg.Error)
	}
	// One retry: a Vault that is down makes a send fail in about a second instead of
	// holding it through a long backoff.
	cfg.MaxRetries = 1
	cfg.Timeout = v.timeout
	retry := cfg.CheckRetry
	if retry == nil {
		retry = api.DefaultRetryPolicy
	}
	// Logins, lookups and renewals go through a client of their own, not counted in Calls.
	acfg := api.DefaultConfig()
	if from != nil {
		acfg = from.CloneConfig()
	}
	acfg.MaxRetries, acfg.Timeout, acfg.CheckRetry = 1, v.timeout, retry
	authClient, err := api.NewClient(acfg)
	if err != nil {
		return nil, fmt.Errorf("keyring: vault client: %w", err)
	}
	authClient.ClearToken()
	cfg.CheckRetry = func(ctx context.Context, resp *http.Response, err error) (bool, error) {
		var le *loginError
		if errors.As(err, &le) {
			return false, nil // the login already had its own retry
		}
		if invalidToken(resp) {
			// Expired or revoked: retried at once if a login or the token file gives a
			// new token (the transport asks for it), else a clear refusal.
			return v.auth.invalid(resp.Request.Header.Get("X-Vault-Token")), nil
		}
		if refusedForSize(resp) {
			// Vault answers a request over its JSON limits with HTTP 500; the same
			// request is refused again, so do not wait to send it twice.
			return false, nil
		}
		return retry(ctx, resp, err)
	}
	backoff := cfg.Backoff
	cfg.Backoff = func(min, max time.Duration, attempt int, resp *http.Response) time.Duration {
		if resp != nil && resp.StatusCode == http.StatusForbidden {
			return 0 // a retry with a new token (above) need not wait
		}
		return backoff(min, max, attempt, resp)
	}
	c, err := api.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("keyring: vault client: %w", err)
	}
	if from != nil {
		// NewClient read VAULT_TOKEN and VAULT_NAMESPACE; the given client's own win.
		c.SetHeaders(from.Headers())
		authClient.SetHeaders(from.Headers())
		c.SetToken(from.Token())
	}
	// The token travels from v.auth, set by the transport on each request.
	v.auth = newSession(authClient, login, tokenFile, c.Token(), v.timeout)
	v.https = []*http.Client{cfg.HttpClient, acfg.HttpClient}
	c.ClearToken()
	// Wrapped after NewClient, which expects an *http.Transport for unix:// addresses.
	cfg.HttpClient.Transport = &countingTransport{base: &authTransport{base: cfg.HttpClient.Transport, s: v.auth}, n: &v.calls}
	return c, nil
}

// refusedForSize reports whether resp is Vault's refusal of a request over its JSON
// limits (HTTP 500 "... exceeds allowed ...").
func refusedForSize(resp *http.Response) bool {
	if resp == nil || resp.StatusCode != http.StatusInternalServerError || resp.Body == nil {
		return false
	}
	return bytes.Contains(peekBody(resp), []byte("exceeds allowed"))
}

// peekBody reads the start of resp's body and puts it back, so that the caller still
// reads the whole answer.
func peekBody(resp *http.Response) []byte {
	head := make([]byte, 512)
	n, _ := io.ReadFull(resp.Body, head)
	head = head[:n]
	resp.Body = struct {
		io.Reader
		io.Closer
	}{io.MultiReader(bytes.NewReader(head), resp.Body), resp.Body}
	return head
}

// countingTransport counts HTTP requests, retries included.
type countingTransport struct {
	base http.RoundTripper
	n    *atomic.Int64
}

func (t *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	t.n.Add(1)
	start := time.Now()
	resp, err := t.base.RoundTrip(r)
	recordVaultRequest(r, resp, err, start) // keyring/metrics.go
	return resp, err
}

func (t *countingTransport) CloseIdleConnections() {
	if c, ok := t.base.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

// Logins is the number of logins the keyring made (VaultAuth), 0 for a static token.
func (v *Vault) Logins() int64 { return v.auth.logins.Load() }

// Close stops the background renewal of the keyring's token and closes its idle
// connections to Vault. The keyring must not be used after it; the token itself is left
// to expire (another process may share it).
func (v *Vault) Close() error {
	v.auth.close()
	for _, c := range v.https {
		c.CloseIdleConnections()
	}
	return nil
}

// KeyID returns the name of the transit key that wraps new data keys.
func (v *Vault) KeyID() string { return v.key }

// Calls returns the number of HTTP requests the keyring has sent to Vault.
func (v *Vault) Calls() int64 { return v.calls.Load() }

// GenerateDataKey asks Vault for a new 256-bit data key, in plaintext and wrapped.
func (v *Vault) GenerateDataKey(ctx context.Context) (*DataKey, error) {
	return v.generateDataKey(ctx, v.key)
}

// generateDataKey asks for a data key wrapped under the transit key named key.
func (v *Vault) generateDataKey(ctx context.Context, key string) (*DataKey, error) {
	const op = "generate data key"
	data, err := v.write(ctx, "datakey/plaintext/"+key, map[string]any{"bits": 256})
	if err != nil {
		return nil, v.fail(ctx, op, key, 0, "", err)
	}
	wrapped, _ := data["ciphertext"].(string)
	version, ok := wrappedVersion(wrapped)
	if !ok {
		return nil, &Error{Op: op, KeyID: key, Kind: ErrInvalidWrappedKey, Err: errors.New("vault returned a ciphertext without a vault:vN: prefix")}
	}
	if n, ok := intField(data["key_version"]); ok && n > 0 {
		version = n
	}
	plain, err := decodeKey(data["plaintext"])
	if err != nil {
		return nil, &Error{Op: op, KeyID: key, Version: version, Kind: ErrUnavailable, Err: err}
	}
	return &DataKey{Plaintext: plain, Wrapped: wrapped, KeyID: key, Version: version}, nil
}

// UnwrapDataKey asks Vault to decrypt a data key wrapped under the transit key keyID.
// keyID and wrapped usually come from a message, so both are checked before any request.
func (v *Vault) UnwrapDataKey(ctx context.Context, keyID, wrapped string) ([]byte, error) {
	const op = "unwrap data key"
	version, ok := wrappedVersion(wrapped)
	if !ok {
		return nil, &Error{Op: op, KeyID: keyID, Kind: ErrInvalidWrappedKey, Err: errors.New(`wrapped key is not of the form "vault:vN:..."`)}
	}
	if !transitName.MatchString(keyID) {
		return nil, &Error{Op: op, KeyID: keyID, Version: version, Kind: ErrInvalidWrappedKey, Err: errors.New("key ID is not a valid transit key name")}
	}
	data, err := v.write(ctx, "decrypt/"+keyID, map[string]any{"ciphertext": wrapped})
	if err != nil {
		return nil, v.fail(ctx, op, keyID, version, wrapped, err)
	}
	key, err := decodeKey(data["plaintext"])
	if err != nil {
		// Decrypted, but not to a data key: something else was wrapped under this key.
		return nil, &Error{Op: op, KeyID: keyID, Version: version, Kind: ErrInvalidWrappedKey, Err: err}
	}
	return key, nil
}

// Rotate adds a new version to the transit key; later data keys are wrapped under it,
// and keys wrapped under older versions still unwrap.
func (v *Vault) Rotate(ctx context.Context) error {
	if _, err := v.write(ctx, "keys/"+v.key+"/rotate", nil); err != nil {
		return v.fail(ctx, "rotate key", v.key, 0, "", err)
	}
	return nil
}

func (v *Vault) write(ctx context.Context, path string, body map[string]any) (map[string]any, error) {
	ctx, cancel := context.WithTimeout(ctx, v.timeout)
	defer cancel()
	sec, err := v.client.Logical().WriteWithContext(ctx, v.mount+"/"+path, body)
	if err != nil {
		return nil, err
	}
	if sec == nil {
		// The client turns a 404 with an empty body into (nil, nil).
		return nil, &api.ResponseError{StatusCode: http.StatusNotFound, Errors: []string{"empty response"}}
	}
	return sec.Data, nil
}

// decodeKey decodes the base64 "plaintext" field of a transit answer into a data key.
func decodeKey(field any) ([]byte, error) {
	s, _ := field.(string)
	key, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, errors.New("vault returned a plaintext that is not base64")
	}
	if len(key) != DataKeySize {
		return nil, fmt.Errorf("vault returned a %d-byte key, want %d", len(key), DataKeySize)
	}
	return key, nil
}

// WrappedVersion is the version of the transit key that wrapped a data key, 0 if the
// text is not Vault's ciphertext (keyring.WrappedVersioner).
func (v *Vault) WrappedVersion(wrapped string) int {
	n, _ := wrappedVersion(wrapped)
	return n
}

// CiphertextVersion returns N of a Vault Transit ciphertext "vault:vN:...", the form of
// Vault's wrapped data keys and of transit and deterministic field values
// (docs/FIELDS.md); ok is false for any other text. It is the one reader of that form:
// nothing outside the Vault keyring parses it.
func CiphertextVersion(s string) (version int, ok bool) { return wrappedVersion(s) }

// wrappedVersion parses N from a Vault ciphertext "vault:vN:...".
func wrappedVersion(wrapped string) (int, bool) {
	rest, ok := strings.CutPrefix(wrapped, "vault:v")
	if !ok {
		return 0, false
	}
	num, body, ok := strings.Cut(rest, ":")
	// A first digit 1-9: Atoi would also take a sign ("vault:v+1:"), a second spelling.
	if !ok || body == "" || num == "" || num[0] < '1' || num[0] > '9' {
		return 0, false
	}
	n, err := strconv.Atoi(num)
	if err != nil || n <= 0 {
		return 0, false
	}
	return n, true
}

func intField(f any) (int, bool) {
	switch n := f.(type) {
	case json.Number:
		i, err := n.Int64()
		return int(i), err == nil
	case float64:
		return int(n), true
	case int:
		return n, true
	}
	return 0, false
}

// VaultError is the part of a Vault error answer that is safe to print: the HTTP status
// and the server's error strings. It is the Err of an *Error from the Vault keyring when
// Vault answered; errors.As reaches it.
type VaultError struct {
	StatusCode int
	Errors     []string
}

func (e *VaultError) Error() string {
	if len(e.Errors) == 0 {
		return fmt.Sprintf("vault: HTTP %d", e.StatusCode)
	}
	return fmt.Sprintf("vault: HTTP %d: %s", e.StatusCode, strings.Join(e.Errors, "; "))
}

// fail turns an error of the Vault client into an *Error. The client's own errors carry
// the request URL and, for unparsable answers, the raw body; only the status, Vault's
// error strings and the network cause are kept, with the token and the wrapped key
// scrubbed out in case a server ever echoes them.
func (v *Vault) fail(ctx context.Context, op, keyID string, version int, wrapped string, err error) error {
	e := &Error{Op: op, KeyID: keyID, Version: version}
	var re *api.ResponseError
	var ue *url.Error
	var le *loginError
	switch {
	case errors.As(err, &le):
		e.Kind, e.Err = v.failLogin(ctx, le.err)
	case errors.As(err, &re):
		ve := &VaultError{StatusCode: re.StatusCode}
		if re.RawError {
			ve.Errors = []string{"unparsable error answer"}
		} else {
			for _, s := range re.Errors {
				ve.Errors = append(ve.Errors, v.scrub(cleanVaultError(s), wrapped)...)
			}
		}
		e.Err = ve
		e.Kind = shredded(keyID, kindOf(op, ve))
		if e.Kind == ErrPermissionDenied && !v.auth.renews() && slices.Contains(ve.Errors, "invalid token") {
			e.Err = fmt.Errorf("%w: %w", ErrTokenInvalid, ve)
		}
	case ctx.Err() != nil:
		e.Err = ctx.Err()
		if errors.Is(e.Err, context.DeadlineExceeded) {
			e.Kind = ErrUnavailable
		}
	case errors.As(err, &ue):
		e.Err = ue.Err // drops the URL
		e.Kind = ErrUnavailable
	default:
		e.Err = err
		e.Kind = ErrUnavailable
	}
	return e
}

// failLogin is fail for an error of obtaining a token: a refusal of the credential is
// ErrPermissionDenied, a Vault that cannot be reached ErrUnavailable; both are
// environment faults.
func (v *Vault) failLogin(ctx context.Context, err error) (kind, cause error) {
	var re *api.ResponseError
	var ue *url.Error
	switch {
	case errors.As(err, &re):
		ve := &VaultError{StatusCode: re.StatusCode}
		for _, s := range re.Errors {
			ve.Errors = append(ve.Errors, v.scrub(cleanVaultError(s), "")...)
		}
		if re.StatusCode >= 500 || re.StatusCode == http.StatusTooManyRequests {
			return ErrUnavailable, fmt.Errorf("log in to vault: %w", ve)
		}
		return ErrPermissionDenied, fmt.Errorf("log in to vault: %w", ve)
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled):
		return ErrUnavailable, fmt.Errorf("log in to vault: %w", err)
	case errors.As(err, &ue):
		return ErrUnavailable, fmt.Errorf("log in to vault: %w", ue.Err)
	}
	// A credential that could not be read or presented (a missing file, no token).
	return ErrPermissionDenied, fmt.Errorf("vault credentials: %w", err)
}

func (v *Vault) scrub(lines []string, wrapped string) []string {
	token := v.auth.current()
	for i, s := range lines {
		if token != "" {
			s = strings.ReplaceAll(s, token, "[token]")
		}
		if wrapped != "" {
			s = strings.ReplaceAll(s, wrapped, "[wrapped key]")
		}
		lines[i] = s
	}
	return lines
}

// cleanVaultError flattens Vault's multierror text ("1 error occurred:\n\t* permission
// denied\n\n") into its messages.
func cleanVaultError(s string) []string {
	var out []string
	for _, line := range strings.Split(s, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasSuffix(line, " occurred:") {
			continue
		}
		out = append(out, strings.TrimPrefix(line, "* "))
	}
	return out
}

func kindOf(op string, ve *VaultError) error {
	msg := strings.ToLower(strings.Join(ve.Errors, "; "))
	has := func(subs ...string) bool {
		for _, s := range subs {
			if strings.Contains(msg, s) {
				return true
			}
		}
		return false
	}
	switch {
	case has("too old", "disallowed by policy"):
		return ErrVersionTooOld
	case ve.StatusCode == http.StatusForbidden || has("permission denied"):
		return ErrPermissionDenied
	case ve.StatusCode == http.StatusRequestEntityTooLarge || has("exceeds allowed", "request body too large"):
		// Vault's JSON limits ("JSON string value exceeds allowed length", "JSON array
		// exceeds allowed element count", ...) and max_request_size ("http: request body
		// too large"), answered with HTTP 500 (http/util.go, wrapJSONLimitsHandler): a
		// refusal of the request's content, before the first case about server errors.
		return ErrValueRefused
	case has("encryption key not found", "no existing key named", "key not found", "no handler for route") || ve.StatusCode == http.StatusNotFound:
		return ErrKeyNotFound
	case has("message authentication failed", "invalid ciphertext", "unable to decrypt", "invalid key version", "invalid version"):
		return ErrInvalidWrappedKey
	case ve.StatusCode >= 500 || ve.StatusCode == http.StatusTooManyRequests || ve.StatusCode == http.StatusPreconditionFailed:
		return ErrUnavailable
	case op == "unwrap data key" && ve.StatusCode == http.StatusBadRequest:
		// Any other refusal of a ciphertext we passed the local checks is about its content.
		return ErrInvalidWrappedKey
	}
	return nil
}
