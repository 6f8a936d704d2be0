package keyring

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/vault/api"
	"github.com/hashicorp/vault/api/auth/approle"
	"github.com/hashicorp/vault/api/auth/kubernetes"

	"github.com/pubcrypt/pubcrypt/internal/telemetry"
)

// VaultAuth says how the Vault keyring obtains its token. The zero value is a static
// token: VaultOptions.Client's, else VAULT_TOKEN.
//
// Whatever the method, the keyring keeps its token alive on its own: a renewable token is
// renewed before it expires (Vault's lifetime watcher), a token from a login is replaced by
// a fresh login when it reaches its max TTL or Vault calls it invalid (revoked, expired),
// and a token file is read again when it changes. A request that arrives during a login
// waits for it (within VaultOptions.Timeout) and goes through with the new token. A
// credential Vault refuses is ErrPermissionDenied, an environment fault: the message
// waits, it is never acknowledged.
type VaultAuth struct {
	// Method is "token" (or ""), "approle", "jwt", "kubernetes" or "cert".
	Method string
	// Mount is the path the auth method is enabled at; default the method's name
	// ("approle", "jwt", "kubernetes", "cert").
	Mount string

	// TokenFile (token): read the token from this file instead, and again whenever the
	// file changes, as Vault Agent's file sink rewrites it. Such a token is not renewed
	// by the keyring: the agent does that.
	TokenFile string

	// RoleID or RoleIDFile (approle): the role ID; neither: $VAULT_ROLE_ID.
	RoleID, RoleIDFile string
	// SecretID or SecretIDFile (approle): the secret ID (neither: $VAULT_SECRET_ID), or
	// with SecretIDWrapped a
	// response-wrapping token for it (vault write -wrap-ttl=... -f auth/approle/role/R/secret-id).
	// A wrapped secret ID is unwrapped once, at the first login, and kept in memory for
	// the logins after it: a wrapping token can be used only once.
	SecretID, SecretIDFile string
	SecretIDWrapped        bool

	// Role (jwt, kubernetes; cert: optional name of the certificate role) is the role to
	// log in as.
	Role string
	// JWTFile (jwt: required; kubernetes: default
	// /var/run/secrets/kubernetes.io/serviceaccount/token) is the file holding the signed
	// token presented at each login, read again at every login so that a rotated
	// workload-identity token is used.
	JWTFile string

	// Login, if set, is any other way to log in (Vault's own auth packages for AWS, GCP,
	// Azure, LDAP, userpass, ...); it wins over Method.
	Login api.AuthMethod
}

// The auth methods VaultAuth.Method names.
var authMethods = []string{"token", "approle", "jwt", "kubernetes", "cert"}

// VaultAuthSettings name VaultAuth's settings where a program takes them as text: the CLI
// as --vault-NAME (with "-" for "_": --vault-auth, --vault-role-id-file), enc+ URLs as
// vault_NAME (vault_auth=approle&vault_role_id_file=...). VaultAuthFrom reads them.
var VaultAuthSettings = []struct{ Name, Usage string }{
	{"auth", "how to get a Vault token: token ($VAULT_TOKEN or the token file), approle, jwt, kubernetes or cert"},
	{"auth_mount", "path of the auth method (default: the method's name)"},
	{"token_file", "token: read the token from this file, again whenever it changes (Vault Agent's sink)"},
	{"role_id_file", "approle: file holding the role ID (default $VAULT_ROLE_ID)"},
	{"secret_id_file", "approle: file holding the secret ID (default $VAULT_SECRET_ID)"},
	{"secret_id_wrapped", "approle: the secret ID is a response-wrapping token (true/false)"},
	{"role", "jwt, kubernetes: the role to log in as; cert: the certificate role (optional)"},
	{"jwt_file", "jwt: file holding the signed JWT, read at each login; kubernetes: the service-account token (default " + defaultKubernetesTokenFile + ")"},
}

// VaultAuthFrom builds a VaultAuth from settings by the names of VaultAuthSettings; get
// returns "" for a setting not given. An error names the setting.
func VaultAuthFrom(get func(name string) string) (VaultAuth, error) {
	a := VaultAuth{
		Method: get("auth"), Mount: get("auth_mount"), TokenFile: get("token_file"),
		RoleIDFile: get("role_id_file"), SecretIDFile: get("secret_id_file"),
		Role: get("role"), JWTFile: get("jwt_file"),
	}
	switch w := get("secret_id_wrapped"); w {
	case "", "false":
	case "true":
		a.SecretIDWrapped = true
	default:
		return VaultAuth{}, &OptionError{Option: "secret_id_wrapped", Reason: fmt.Sprintf("is %q, want true or false", w)}
	}
	return a, nil
}

// defaultKubernetesTokenFile is where Kubernetes mounts a pod's service-account token.
const defaultKubernetesTokenFile = "/var/run/secrets/kubernetes.io/serviceaccount/token"

// loginMethod checks a and returns the login it describes: nil for a static token.
func (a VaultAuth) loginMethod(optsType string) (api.AuthMethod, error) {
	opt := func(name, reason string) error {
		return &OptionError{Option: optsType + ".Auth." + name, Reason: reason}
	}
	if a.Login != nil {
		return a.Login, nil
	}
	method := a.Method
	if method == "" {
		method = "token"
	}
	known := false
	for _, m := range authMethods {
		known = known || m == method
	}
	if !known {
		return nil, opt("Method", fmt.Sprintf("%q is not one of %s", a.Method, strings.Join(authMethods, ", ")))
	}
	mount := strings.Trim(a.Mount, "/")
	if a.Mount == "" {
		mount = method
	}
	if !validMount(mount) {
		return nil, opt("Mount", fmt.Sprintf("%q is not a valid mount path", a.Mount))
	}
	// Settings of another method are a mistake worth saying, not something to ignore.
	used := map[string]bool{
		"TokenFile":       a.TokenFile != "",
		"RoleID":          a.RoleID != "" || a.RoleIDFile != "",
		"SecretID":        a.SecretID != "" || a.SecretIDFile != "" || a.SecretIDWrapped,
		"Role":            a.Role != "",
		"JWTFile":         a.JWTFile != "",
		"Mount (a token)": a.Mount != "" && method == "token",
	}
	allowed := map[string][]string{
		"token":      {"TokenFile"},
		"approle":    {"RoleID", "SecretID"},
		"jwt":        {"Role", "JWTFile"},
		"kubernetes": {"Role", "JWTFile"},
		"cert":       {"Role"},
	}[method]
	for name, set := range used {
		ok := false
		for _, a := range allowed {
			ok = ok || a == name
		}
		if set && !ok {
			return nil, opt(strings.Fields(name)[0], "is not used by the "+method+" auth method")
		}
	}
	switch method {
	case "token":
		return nil, nil
	case "approle":
		roleID := a.RoleID
		if a.RoleIDFile != "" {
			if roleID != "" {
				return nil, opt("RoleIDFile", "and RoleID are both set")
			}
			b, err := os.ReadFile(a.RoleIDFile)
			if err != nil {
				return nil, opt("RoleIDFile", "cannot be read: "+pathError(err))
			}
			roleID = strings.TrimSpace(string(b))
		}
		if roleID == "" {
			roleID = os.Getenv("VAULT_ROLE_ID")
		}
		if roleID == "" {
			return nil, opt("RoleID", "is required by the approle auth method (or RoleIDFile, or $VAULT_ROLE_ID)")
		}
		secretID := a.SecretID
		if secretID != "" && a.SecretIDFile != "" {
			return nil, opt("SecretIDFile", "and SecretID are both set")
		}
		if secretID == "" && a.SecretIDFile == "" {
			secretID = os.Getenv("VAULT_SECRET_ID")
		}
		if secretID == "" && a.SecretIDFile == "" {
			return nil, opt("SecretID", "is required by the approle auth method (or SecretIDFile, or $VAULT_SECRET_ID)")
		}
		return &appRoleLogin{mount: mount, roleID: roleID, secretID: secretID, file: a.SecretIDFile, wrapped: a.SecretIDWrapped}, nil
	case "jwt":
		if a.Role == "" {
			return nil, opt("Role", "is required by the jwt auth method")
		}
		if a.JWTFile == "" {
			return nil, opt("JWTFile", "is required by the jwt auth method")
		}
		return &jwtLogin{mount: mount, role: a.Role, file: a.JWTFile}, nil
	case "kubernetes":
		if a.Role == "" {
			return nil, opt("Role", "is required by the kubernetes auth method")
		}
		file := a.JWTFile
		if file == "" {
			file = defaultKubernetesTokenFile
		}
		k, err := kubernetes.NewKubernetesAuth(a.Role, kubernetes.WithMountPath(mount), kubernetes.WithServiceAccountTokenPath(file))
		if err != nil {
			return nil, opt("Role", err.Error())
		}
		return k, nil
	default: // cert
		return &certLogin{mount: mount, name: a.Role}, nil
	}
}

// pathError is the text of a file error without Go's "open " prefix noise.
func pathError(err error) string {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Path + ": " + pe.Err.Error()
	}
	return err.Error()
}

// appRoleLogin logs in with Vault's approle package, unwrapping a wrapped secret ID once.
type appRoleLogin struct {
	mount, roleID string
	secretID      string // in memory: given, or unwrapped from a wrapping token
	file          string
	wrapped       bool
	mu            sync.Mutex
}

func (l *appRoleLogin) Login(ctx context.Context, c *api.Client) (*api.Secret, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	id := l.secretID
	if id == "" {
		// Read at each login: whoever delivers secret IDs may replace the file.
		b, err := os.ReadFile(l.file)
		if err != nil {
			return nil, fmt.Errorf("approle secret ID file: %s", pathError(err))
		}
		id = strings.TrimSpace(string(b))
	}
	if l.wrapped {
		un, err := c.Logical().UnwrapWithContext(ctx, id)
		if err != nil {
			return nil, fmt.Errorf("unwrap the approle secret ID: %w", err)
		}
		id = ""
		if un != nil {
			id, _ = un.Data["secret_id"].(string)
		}
		if id == "" {
			return nil, errors.New("the wrapping token does not hold a secret ID")
		}
		l.secretID, l.wrapped = id, false
	}
	a, err := approle.NewAppRoleAuth(l.roleID, &approle.SecretID{FromString: id}, approle.WithMountPath(l.mount))
	if err != nil {
		return nil, err
	}
	return a.Login(ctx, c)
}

// jwtLogin logs in with a signed JWT read from a file at each login (auth/jwt/login).
// Vault's Go module has no package for it; the call is the one the jwt method documents.
type jwtLogin struct{ mount, role, file string }

func (l *jwtLogin) Login(ctx context.Context, c *api.Client) (*api.Secret, error) {
	b, err := os.ReadFile(l.file)
	if err != nil {
		return nil, fmt.Errorf("jwt file: %s", pathError(err))
	}
	jwt := strings.TrimSpace(string(b))
	if jwt == "" {
		return nil, fmt.Errorf("jwt file %s is empty", l.file)
	}
	return c.Logical().WriteWithContext(ctx, "auth/"+l.mount+"/login", map[string]any{"role": l.role, "jwt": jwt})
}

// certLogin logs in with the client's TLS certificate (VAULT_CLIENT_CERT, VAULT_CLIENT_KEY
// or the given client's TLS configuration) at auth/cert/login.
type certLogin struct{ mount, name string }

func (l *certLogin) Login(ctx context.Context, c *api.Client) (*api.Secret, error) {
	body := map[string]any{}
	if l.name != "" {
		body["name"] = l.name
	}
	return c.Logical().WriteWithContext(ctx, "auth/"+l.mount+"/login", body)
}

// session holds the keyring's current token and keeps it valid. Every request to Vault
// takes its token from token(); a login, a token-file read or a first lookup happens
// there, once for all the requests waiting on it.
type session struct {
	client  *api.Client    // for logins, lookups and renewals; not counted in Vault.Calls
	login   api.AuthMethod // nil: a static token or a token file
	file    string         // token file, "" if none
	timeout time.Duration
	logins  atomic.Int64

	mu        sync.Mutex
	tok       string
	known     bool      // tok is usable as far as the keyring knows
	looked    bool      // a static token's lifetime was looked up
	expires   time.Time // when the token stops being used (useUntil); zero: no known expiry
	gen       uint64    // counts tokens, so a stale renewal cannot touch a newer one
	busy      chan struct{}
	failed    error // the last login's error, kept for failedFor after it
	failedAt  time.Time
	fileStamp string // size and modification time of the token file last read
	fileSeen  time.Time
	watcher   *api.LifetimeWatcher
	closed    bool
}

// loginRetryGap is how long a failed login is answered from memory, so that a refused
// credential does not become one login per message.
const loginRetryGap = time.Second

// tokenFileCheck is how often the token file is checked for a change.
const tokenFileCheck = time.Second

// expiryMargin is how long before a token's known expiry it is no longer used, at most:
// a request then waits for the new token rather than reaching Vault with one about to
// expire. A token that lives less than five seconds keeps a fifth of its life.
const expiryMargin = time.Second

// useUntil is when a token that expires at expires after living ttl stops being used.
func useUntil(expires time.Time, ttl time.Duration) time.Time {
	return expires.Add(-min(expiryMargin, ttl/5))
}

func newSession(client *api.Client, login api.AuthMethod, file, static string, timeout time.Duration) *session {
	return &session{client: client, login: login, file: file, tok: static, known: login == nil && file == "", timeout: timeout}
}

// renews reports whether a token Vault calls invalid can be replaced: by a login or by
// reading the token file again.
func (s *session) renews() bool { return s.login != nil || s.file != "" }

// current returns the token in use, for scrubbing; "" if none.
func (s *session) current() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tok
}

// token returns a token to send, logging in or reading the token file first if needed.
func (s *session) token(ctx context.Context) (string, error) {
	for {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return "", errors.New("keyring closed")
		}
		if s.file != "" && time.Since(s.fileSeen) >= tokenFileCheck {
			s.readFileLocked(false)
		}
		if s.login == nil && s.file == "" && !s.looked && s.busy == nil {
			s.startLocked(s.lookupStatic)
		}
		if s.login == nil && s.file == "" {
			// A static token is sent as it is; the first lookup of its lifetime (to renew
			// it) runs beside the request.
			tok := s.tok
			s.mu.Unlock()
			if tok == "" {
				return "", errors.New("no vault token")
			}
			return tok, nil
		}
		if s.known && s.tok != "" && (s.expires.IsZero() || time.Now().Before(s.expires)) {
			tok := s.tok
			s.mu.Unlock()
			return tok, nil
		}
		if s.login == nil {
			// A token file that could not be read or holds nothing usable.
			err := s.failed
			s.mu.Unlock()
			if err == nil {
				err = errors.New("the token file holds no token")
			}
			return "", err
		}
		if s.busy == nil && s.failed != nil && time.Since(s.failedAt) < loginRetryGap {
			err := s.failed
			s.mu.Unlock()
			return "", err
		}
		if s.busy == nil {
			s.startLocked(s.doLogin)
		}
		wait := s.busy
		s.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			return "", ctx.Err()
		}
		s.mu.Lock()
		err := s.failed
		ok := s.known
		s.mu.Unlock()
		if !ok && err != nil {
			return "", err
		}
	}
}

// startLocked runs f in the background as the one piece of work others wait on (s.busy).
func (s *session) startLocked(f func(context.Context) error) {
	done := make(chan struct{})
	s.busy = done
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
		err := f(ctx)
		cancel()
		s.mu.Lock()
		s.busy = nil
		if err != nil {
			s.failed, s.failedAt = err, time.Now()
		} else {
			s.failed = nil
		}
		s.mu.Unlock()
		close(done)
	}()
}

// invalid is told that Vault called the token used invalid: the next request logs in
// again or reads the token file again. It reports whether retrying can help.
func (s *session) invalid(used string) bool {
	if !s.renews() {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tok != used {
		return true // already replaced
	}
	if s.file != "" {
		s.readFileLocked(true)
		return s.tok != used
	}
	s.known = false
	s.failed = nil
	return true
}

// readFileLocked reads the token file if it changed (or always, if force).
func (s *session) readFileLocked(force bool) {
	s.fileSeen = time.Now()
	fi, err := os.Stat(s.file)
	if err != nil {
		s.failed, s.known = fmt.Errorf("token file: %s", pathError(err)), s.tok != ""
		return
	}
	stamp := fmt.Sprint(fi.Size(), fi.ModTime().UnixNano())
	if stamp == s.fileStamp && !force {
		return
	}
	b, err := os.ReadFile(s.file)
	if err != nil {
		s.failed = fmt.Errorf("token file: %s", pathError(err))
		return
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		// Vault Agent truncates before it writes: keep the old token until the new one.
		return
	}
	s.fileStamp = stamp
	if tok != s.tok {
		s.tok, s.gen, s.known, s.failed = tok, s.gen+1, true, nil
		slog.Debug("keyring: vault token file read", "file", s.file)
	}
}

// doLogin logs in and installs the new token, with a lifetime watcher if it is renewable.
func (s *session) doLogin(ctx context.Context) error {
	sec, err := s.login.Login(ctx, s.client)
	if err == nil && (sec == nil || sec.Auth == nil || sec.Auth.ClientToken == "") {
		err = errors.New("vault answered the login without a token")
	}
	telemetry.VaultLogin(ctx, err == nil)
	if err != nil {
		return err
	}
	s.logins.Add(1)
	s.install(sec, true)
	return nil
}

// lookupStatic learns a static token's lifetime, to renew it if it is renewable.
func (s *session) lookupStatic(ctx context.Context) error {
	s.mu.Lock()
	tok := s.tok
	s.looked = true
	s.mu.Unlock()
	if tok == "" {
		return nil
	}
	c, err := s.client.Clone()
	if err != nil {
		return nil
	}
	c.SetToken(tok)
	sec, err := c.Auth().Token().LookupSelfWithContext(ctx)
	if err != nil || sec == nil {
		return nil // the requests themselves will say what is wrong
	}
	ttl, _ := sec.TokenTTL()
	renewable, _ := sec.TokenIsRenewable()
	if ttl <= 0 || !renewable {
		return nil
	}
	s.install(&api.Secret{Auth: &api.SecretAuth{ClientToken: tok, Renewable: true, LeaseDuration: int(ttl.Seconds())}}, false)
	return nil
}

// install makes sec's token current and, if it is renewable, renews it in the background
// until its max TTL; a login's token is then replaced by a new login before it expires.
func (s *session) install(sec *api.Secret, relogin bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.watcher != nil {
		s.watcher.Stop()
		s.watcher = nil
	}
	s.gen++
	gen := s.gen
	s.tok, s.known = sec.Auth.ClientToken, true
	s.expires = time.Time{}
	if d := time.Duration(sec.Auth.LeaseDuration) * time.Second; d > 0 {
		s.expires = useUntil(time.Now().Add(d), d)
	}
	if s.closed || s.expires.IsZero() {
		return
	}
	c, err := s.client.Clone()
	if err != nil {
		return
	}
	c.SetToken(sec.Auth.ClientToken)
	behavior := api.RenewBehaviorIgnoreErrors
	if !sec.Auth.Renewable {
		behavior = api.RenewBehaviorRenewDisabled // only to be told when to log in again
	}
	w, err := c.NewLifetimeWatcher(&api.LifetimeWatcherInput{Secret: sec, RenewBehavior: behavior})
	if err != nil {
		return
	}
	s.watcher = w
	go w.Start()
	go func() {
		for {
			select {
			case r := <-w.RenewCh():
				if r != nil && r.Secret != nil && r.Secret.Auth != nil {
					s.mu.Lock()
					if s.gen == gen {
						d := time.Duration(r.Secret.Auth.LeaseDuration) * time.Second
						s.expires = useUntil(time.Now().Add(d), d)
					}
					s.mu.Unlock()
				}
			case <-w.DoneCh():
				// The token will not be extended any more (its max TTL, or renewals
				// failing): log in again now, while the old token still serves.
				s.mu.Lock()
				if relogin && s.gen == gen && !s.closed && s.busy == nil {
					s.startLocked(s.doLogin)
				}
				s.mu.Unlock()
				return
			}
		}
	}()
}

// close stops the renewals.
func (s *session) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	if s.watcher != nil {
		s.watcher.Stop()
		s.watcher = nil
	}
}

// authTransport puts the session's current token on every request.
type authTransport struct {
	base http.RoundTripper
	s    *session
}

// loginError is a failure to obtain a token, carried through the HTTP client to fail.
type loginError struct{ err error }

func (e *loginError) Error() string { return e.err.Error() }
func (e *loginError) Unwrap() error { return e.err }

func (t *authTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	tok, err := t.s.token(r.Context())
	if err != nil {
		return nil, &loginError{err}
	}
	r = r.Clone(r.Context())
	r.Header.Set("X-Vault-Token", tok)
	return t.base.RoundTrip(r)
}

func (t *authTransport) CloseIdleConnections() {
	if c, ok := t.base.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

// invalidToken reports whether resp is Vault's answer to a token it does not accept
// (HTTP 403 "permission denied" + "invalid token"), as opposed to a token without the
// policy.
func invalidToken(resp *http.Response) bool {
	if resp == nil || resp.StatusCode != http.StatusForbidden || resp.Body == nil {
		return false
	}
	return bytes.Contains(peekBody(resp), []byte("invalid token"))
}
