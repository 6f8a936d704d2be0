package e2e

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
	"gocloud.dev/pubsub"

	"github.com/pubcrypt/pubcrypt/cryptsub"
	"github.com/pubcrypt/pubcrypt/crypttopic"
	"github.com/pubcrypt/pubcrypt/internal/devvault"
	"github.com/pubcrypt/pubcrypt/internal/purchase"
	"github.com/pubcrypt/pubcrypt/keyring"
)

// rootClient is a client of the package's Vault with its root token, for setting up
// auth methods.
func rootClient(t testing.TB) *api.Client {
	t.Helper()
	c, err := vaultServer.Client()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// anonClient is a client of the package's Vault without a token: the keyring must get
// its own by logging in.
func anonClient(t testing.TB) *api.Client {
	t.Helper()
	c := rootClient(t)
	c.ClearToken()
	return c
}

func vaultWrite(t testing.TB, c *api.Client, path string, data map[string]any) *api.Secret {
	t.Helper()
	s, err := c.Logical().Write(path, data)
	if err != nil {
		t.Fatalf("vault write %s: %v", path, err)
	}
	return s
}

// enableAuth enables the auth method typ at path (each test its own path).
func enableAuth(t testing.TB, c *api.Client, path, typ string) {
	t.Helper()
	if err := c.Sys().EnableAuthWithOptions(path, &api.EnableAuthOptions{Type: typ}); err != nil {
		t.Fatalf("enable auth %s at %s: %v", typ, path, err)
	}
}

// appRole creates an AppRole role with the policy and token lifetimes (and "default", as
// terraform/vault: it lets a token renew itself), enabling AppRole at mount if needed, and
// returns the auth settings with the role ID and a new secret ID in files, as an
// operator would hand them to pubcrypt.
func appRole(t testing.TB, mount, role, policy, ttl, maxTTL string) keyring.VaultAuth {
	t.Helper()
	roleFile, secretFile, err := vaultServer.CreateAppRole(context.Background(), t.TempDir(),
		devvault.AppRole{Mount: mount, Name: role, Policy: policy, TokenTTL: ttl, TokenMaxTTL: maxTTL})
	if err != nil {
		t.Fatal(err)
	}
	return keyring.VaultAuth{Method: "approle", Mount: mount, RoleIDFile: roleFile, SecretIDFile: secretFile}
}

func authVault(t testing.TB, auth keyring.VaultAuth) *keyring.Vault {
	t.Helper()
	v, err := keyring.NewVault(keyring.VaultOptions{Client: anonClient(t), Key: names.Data, Auth: auth})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = v.Close() })
	return v
}

// authRunDuration is how long TestAppRoleShortTTL runs its producer and consumer: 90 s,
// six max TTLs of 15 s; PUBCRYPT_AUTH_RUN shortens or lengthens it (a Go duration).
func authRunDuration(t *testing.T) time.Duration {
	d := 90 * time.Second
	if s := os.Getenv("PUBCRYPT_AUTH_RUN"); s != "" {
		var err error
		if d, err = time.ParseDuration(s); err != nil {
			t.Fatalf("PUBCRYPT_AUTH_RUN: %v", err)
		}
	}
	return d
}

// TestAppRoleShortTTL runs a producer and a consumer for 90 s against the real Vault and
// Kafka broker, each logged in by AppRole (the roles of terraform/vault, with the
// policies of main.tf) with token_ttl=5s and token_max_ttl=15s: every token is renewed
// twice or so and then replaced by a new login, while transit fields make every message
// call Vault on both sides. No send may fail and every message must decrypt.
func TestAppRoleShortTTL(t *testing.T) {
	run := authRunDuration(t)
	prodAuth := appRole(t, "approle-ttl", "pubcrypt-producer", "pubcrypt-producer", "5s", "15s")
	consAuth := appRole(t, "approle-ttl", "pubcrypt-consumer", "pubcrypt-consumer", "5s", "15s")
	producer, consumer := authVault(t, prodAuth), authVault(t, consAuth)

	newKafka(t, "auth_ttl")
	ctx, cancel := context.WithTimeout(context.Background(), run+2*time.Minute)
	defer cancel()
	policy, err := crypttopic.ParseFieldPolicy("name=transit,address=transit,card_number=envelope")
	if err != nil {
		t.Fatal(err)
	}
	top, err := crypttopic.Open(ctx, "kafka://auth_ttl", crypttopic.Options{Keyring: producer, Fields: policy, FieldKeys: fieldKeys()})
	if err != nil {
		t.Fatal(err)
	}
	sub, err := cryptsub.Open(ctx, "kafka://auth-ttl?topic=auth_ttl&offset=oldest", cryptsub.Options{Keyring: consumer})
	if err != nil {
		t.Fatal(err)
	}

	var (
		mu       sync.Mutex
		sent     = map[string][]byte{}
		failures atomic.Int64
		firstErr atomic.Value
		done     = make(chan struct{})
	)
	go func() { // the producer: a message every 20 ms for the whole run
		defer close(done)
		gen := purchase.NewGenerator(90)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for end := time.Now().Add(run); time.Now().Before(end); <-tick.C {
			p := gen.Next()
			body, _ := json.Marshal(p)
			mu.Lock()
			sent[p.ID] = body
			mu.Unlock()
			sctx, scancel := context.WithTimeout(ctx, 30*time.Second)
			err := top.Send(sctx, &pubsub.Message{Body: body, Metadata: map[string]string{"order": p.ID}})
			scancel()
			if err != nil {
				failures.Add(1)
				firstErr.CompareAndSwap(nil, err.Error())
				mu.Lock()
				delete(sent, p.ID)
				mu.Unlock()
			}
		}
	}()

	// The consumer, at the same time, until the producer is done and all it sent is in.
	received, undecryptable := 0, 0
	var firstBad error
	lastMsg := time.Now()
	for {
		producing := true
		select {
		case <-done:
			producing = false
		default:
		}
		mu.Lock()
		want := len(sent)
		mu.Unlock()
		if !producing && received+undecryptable >= want {
			break
		}
		if time.Since(lastMsg) > 30*time.Second {
			t.Fatalf("nothing received for 30 s, %d of %d so far", received, want)
		}
		rctx, rcancel := context.WithTimeout(ctx, time.Second)
		msg, err := sub.Receive(rctx)
		rcancel()
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			continue
		}
		if err != nil {
			var de *cryptsub.DecryptError
			if !errors.As(err, &de) {
				t.Fatalf("receive after %d messages: %v", received, err)
			}
			de.Message.Ack()
			undecryptable++
			if firstBad == nil {
				firstBad = err
			}
			continue
		}
		lastMsg = time.Now()
		msg.Ack()
		mu.Lock()
		ok := bytes.Equal(msg.Body, sent[msg.Metadata["order"]])
		mu.Unlock()
		if !ok {
			t.Fatalf("order %s decrypted to a body that was not sent", msg.Metadata["order"])
		}
		received++
	}
	if err := top.Shutdown(ctx); err != nil {
		t.Error(err)
	}
	_ = sub.Shutdown(ctx)
	t.Logf("AppRole token_ttl=5s token_max_ttl=15s, %v: %d sent, %d failed sends, %d received and decrypted, %d undecryptable; logins: producer %d, consumer %d; Vault calls: producer %d, consumer %d",
		run, len(sent), failures.Load(), received, undecryptable, producer.Logins(), consumer.Logins(), producer.Calls(), consumer.Calls())
	if failures.Load() != 0 {
		t.Errorf("%d sends failed; first: %v", failures.Load(), firstErr.Load())
	}
	if undecryptable != 0 {
		t.Errorf("%d messages undecryptable; first: %v", undecryptable, firstBad)
	}
	if received != len(sent) || received == 0 {
		t.Errorf("received %d of %d", received, len(sent))
	}
	// Each max TTL of 15 s ends in a new login; fewer logins would mean the tokens did
	// not expire, so the test would prove nothing.
	if min := int64(run / (15 * time.Second)); producer.Logins() < min || consumer.Logins() < min {
		t.Errorf("logins: producer %d, consumer %d; want at least %d each in %v", producer.Logins(), consumer.Logins(), min, run)
	}
}

// TestAppRoleRevokedToken revokes the keyring's token under it: the next call is told
// "invalid token", logs in again and goes through. A static token revoked the same way
// is a clear refusal, ErrPermissionDenied and ErrTokenInvalid, never a success.
func TestAppRoleRevokedToken(t *testing.T) {
	root := rootClient(t)
	v := authVault(t, appRole(t, "approle-revoke", "revoke-producer", "pubcrypt-producer", "1h", "1h"))
	ctx := context.Background()
	if _, err := v.GenerateDataKey(ctx); err != nil {
		t.Fatal(err)
	}
	revokeAll(t, root, "auth/approle-revoke/")
	if _, err := v.GenerateDataKey(ctx); err != nil {
		t.Fatalf("after the token was revoked: %v", err)
	}
	if v.Logins() != 2 {
		t.Errorf("logins = %d, want 2 (the first and one after the revocation)", v.Logins())
	}

	tok, err := vaultServer.CreateToken(ctx, "pubcrypt-producer", "")
	if err != nil {
		t.Fatal(err)
	}
	c := anonClient(t)
	c.SetToken(tok)
	static, err := keyring.NewVault(keyring.VaultOptions{Client: c, Key: names.Data})
	if err != nil {
		t.Fatal(err)
	}
	defer static.Close()
	if _, err := static.GenerateDataKey(ctx); err != nil {
		t.Fatal(err)
	}
	if err := root.Auth().Token().RevokeTree(tok); err != nil {
		t.Fatal(err)
	}
	_, err = static.GenerateDataKey(ctx)
	if !errors.Is(err, keyring.ErrPermissionDenied) || !errors.Is(err, keyring.ErrTokenInvalid) {
		t.Fatalf("static token revoked: %v; want ErrPermissionDenied and ErrTokenInvalid", err)
	}
	checkNoSecrets(t, "revoked static token", err)
	if strings.Contains(err.Error(), tok) {
		t.Errorf("error holds the token: %v", err)
	}
	t.Logf("static token revoked: %v", err)
}

// revokeAll revokes every token issued through the auth mount prefix.
func revokeAll(t testing.TB, c *api.Client, prefix string) {
	t.Helper()
	if _, err := c.Logical().Write("sys/leases/revoke-prefix/"+prefix, nil); err != nil {
		t.Fatalf("revoke %s: %v", prefix, err)
	}
}

// TestWrappedSecretID gives the keyring a response-wrapped secret ID: it unwraps it at the
// first login and logs in again later with the secret ID it kept in memory.
func TestWrappedSecretID(t *testing.T) {
	root := rootClient(t)
	auth := appRole(t, "approle-wrap", "wrap-producer", "pubcrypt-producer", "1h", "1h")
	wc, err := root.Clone()
	if err != nil {
		t.Fatal(err)
	}
	wc.SetToken(root.Token())
	wc.SetWrappingLookupFunc(func(string, string) string { return "2m" })
	w, err := wc.Logical().Write("auth/approle-wrap/role/wrap-producer/secret-id", nil)
	if err != nil || w.WrapInfo == nil {
		t.Fatalf("wrapped secret ID: %v %+v", err, w)
	}
	if err := os.WriteFile(auth.SecretIDFile, []byte(w.WrapInfo.Token), 0o600); err != nil {
		t.Fatal(err)
	}
	auth.SecretIDWrapped = true
	v := authVault(t, auth)
	ctx := context.Background()
	if _, err := v.GenerateDataKey(ctx); err != nil {
		t.Fatal(err)
	}
	revokeAll(t, root, "auth/approle-wrap/")
	if _, err := v.GenerateDataKey(ctx); err != nil {
		t.Fatalf("second login with the unwrapped secret ID: %v", err)
	}
	if v.Logins() != 2 {
		t.Errorf("logins = %d, want 2", v.Logins())
	}
	// The wrapping token was used once, by the keyring: nobody can unwrap it again.
	if _, err := wc.Logical().Unwrap(w.WrapInfo.Token); err == nil {
		t.Error("the wrapping token could be unwrapped a second time")
	}
}

// TestJWTLogin logs in with a JWT signed by a locally generated RSA key whose public half
// is Vault's jwt_validation_pubkeys (no identity provider, no network). Tokens live 2 s,
// at most 4 s, so a 12 s run logs in again and again, each time reading the JWT file, which
// is rewritten with a new JWT halfway. Every call goes through; a JWT Vault does not
// accept is ErrPermissionDenied at the next login.
func TestJWTLogin(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	root := rootClient(t)
	enableAuth(t, root, "jwt-test", "jwt")
	vaultWrite(t, root, "auth/jwt-test/config", map[string]any{
		"jwt_validation_pubkeys": []string{string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}))},
	})
	vaultWrite(t, root, "auth/jwt-test/role/bridge", map[string]any{
		"role_type": "jwt", "bound_audiences": []string{"pubcrypt"}, "user_claim": "sub",
		"token_policies": "pubcrypt-producer", "token_ttl": "2s", "token_max_ttl": "4s",
	})
	file := filepath.Join(t.TempDir(), "token.jwt")
	writeJWT := func(sub string, aud string) {
		now := time.Now().Unix()
		claims := map[string]any{"sub": sub, "aud": aud, "iat": now, "nbf": now - 5, "exp": now + 3600}
		if err := os.WriteFile(file, []byte(signJWT(t, key, claims)), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeJWT("bridge-1", "pubcrypt")
	v := authVault(t, keyring.VaultAuth{Method: "jwt", Mount: "jwt-test", Role: "bridge", JWTFile: file})
	ctx := context.Background()
	calls, failed := 0, 0
	for end, half := time.Now().Add(12*time.Second), time.Now().Add(6*time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if !half.IsZero() && time.Now().After(half) {
			writeJWT("bridge-2", "pubcrypt") // a workload-identity token rotated on disk
			half = time.Time{}
		}
		calls++
		if _, err := v.GenerateDataKey(ctx); err != nil {
			failed++
			t.Errorf("call %d: %v", calls, err)
		}
	}
	t.Logf("JWT login, token_ttl=2s token_max_ttl=4s, 12 s: %d calls, %d failed, %d logins", calls, failed, v.Logins())
	if v.Logins() < 3 {
		t.Errorf("logins = %d in 12 s with a 4 s max TTL, want at least 3", v.Logins())
	}

	// A JWT for another audience: the next login is refused, and says so.
	writeJWT("bridge-3", "someone-else")
	revokeAll(t, root, "auth/jwt-test/")
	_, err = v.GenerateDataKey(ctx)
	if !errors.Is(err, keyring.ErrPermissionDenied) {
		t.Fatalf("refused JWT: %v; want ErrPermissionDenied", err)
	}
	checkNoSecrets(t, "refused JWT", err)
	if b, _ := os.ReadFile(file); strings.Contains(err.Error(), string(b)) {
		t.Errorf("error holds the JWT: %v", err)
	}
	t.Logf("refused JWT: %v", err)
}

// signJWT signs claims with RS256, as an identity provider would.
func signJWT(t testing.TB, key *rsa.PrivateKey, claims map[string]any) string {
	t.Helper()
	enc := base64.RawURLEncoding
	body, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	signed := enc.EncodeToString([]byte(`{"alg":"RS256","typ":"JWT"}`)) + "." + enc.EncodeToString(body)
	sum := sha256.Sum256([]byte(signed))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	return signed + "." + enc.EncodeToString(sig)
}

// TestTokenFileRewritten gives the keyring a token file, as Vault Agent's file sink
// writes it, and replaces the token twice during a run: once by renaming a new file over
// it (the agent's way), once by rewriting it in place; each old token is revoked right
// after. No call fails.
func TestTokenFileRewritten(t *testing.T) {
	ctx := context.Background()
	root := rootClient(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "vault-token")
	newToken := func() string {
		tok, err := vaultServer.CreateToken(ctx, "pubcrypt-producer", "")
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	tokens := []string{newToken()}
	if err := os.WriteFile(file, []byte(tokens[0]+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	v := authVault(t, keyring.VaultAuth{TokenFile: file})
	calls, failed := 0, 0
	start := time.Now()
	for step := 0; time.Since(start) < 6*time.Second; time.Sleep(50 * time.Millisecond) {
		switch {
		case step == 0 && time.Since(start) > 2*time.Second:
			tokens = append(tokens, newToken())
			tmp := filepath.Join(dir, ".vault-token.tmp")
			if err := os.WriteFile(tmp, []byte(tokens[1]), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(tmp, file); err != nil {
				t.Fatal(err)
			}
			if err := root.Auth().Token().RevokeTree(tokens[0]); err != nil {
				t.Fatal(err)
			}
			step++
		case step == 1 && time.Since(start) > 4*time.Second:
			tokens = append(tokens, newToken())
			if err := os.WriteFile(file, []byte(tokens[2]+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := root.Auth().Token().RevokeTree(tokens[1]); err != nil {
				t.Fatal(err)
			}
			step++
		}
		calls++
		if _, err := v.GenerateDataKey(ctx); err != nil {
			failed++
			t.Errorf("call %d: %v", calls, err)
			checkNoSecrets(t, "token file", err)
		}
	}
	t.Logf("token file rewritten twice (rename, in place), old tokens revoked: %d calls, %d failed", calls, failed)
	if len(tokens) != 3 {
		t.Fatalf("the run ended before both rewrites")
	}
}

// TestAuthOptionsChecked: a method's missing or foreign settings are refused at NewVault
// with an OptionError naming them; Kubernetes auth (whose login needs a cluster's
// TokenReview API, absent here) is checked for its configuration only.
func TestAuthOptionsChecked(t *testing.T) {
	for _, tc := range []struct {
		auth keyring.VaultAuth
		opt  string
	}{
		{keyring.VaultAuth{Method: "ldap"}, "VaultOptions.Auth.Method"},
		{keyring.VaultAuth{Method: "approle"}, "VaultOptions.Auth.RoleID"},
		{keyring.VaultAuth{Method: "approle", RoleID: "r"}, "VaultOptions.Auth.SecretID"},
		{keyring.VaultAuth{Method: "approle", RoleID: "r", SecretID: "s", SecretIDFile: "f"}, "VaultOptions.Auth.SecretIDFile"},
		{keyring.VaultAuth{Method: "approle", RoleID: "r", SecretID: "s", JWTFile: "f"}, "VaultOptions.Auth.JWTFile"},
		{keyring.VaultAuth{Method: "jwt", Role: "r"}, "VaultOptions.Auth.JWTFile"},
		{keyring.VaultAuth{Method: "jwt", JWTFile: "f"}, "VaultOptions.Auth.Role"},
		{keyring.VaultAuth{Method: "kubernetes"}, "VaultOptions.Auth.Role"},
		{keyring.VaultAuth{Method: "token", RoleID: "r"}, "VaultOptions.Auth.RoleID"},
		{keyring.VaultAuth{Mount: "x"}, "VaultOptions.Auth.Mount"},
		{keyring.VaultAuth{Method: "approle", Mount: "a/../b", RoleID: "r", SecretID: "s"}, "VaultOptions.Auth.Mount"},
	} {
		_, err := keyring.NewVault(keyring.VaultOptions{Client: anonClient(t), Key: names.Data, Auth: tc.auth})
		var oe *keyring.OptionError
		if !errors.As(err, &oe) || oe.Option != tc.opt {
			t.Errorf("%+v: %v; want an OptionError for %s", tc.auth, err, tc.opt)
		}
	}
	// Kubernetes: the configuration is accepted; a login against a mount whose cluster
	// cannot be reached is an environment fault, never a success.
	root := rootClient(t)
	enableAuth(t, root, "k8s-test", "kubernetes")
	vaultWrite(t, root, "auth/k8s-test/config", map[string]any{"kubernetes_host": "https://127.0.0.1:1", "kubernetes_ca_cert": selfSignedPEM(t), "disable_local_ca_jwt": true})
	vaultWrite(t, root, "auth/k8s-test/role/bridge", map[string]any{
		"bound_service_account_names": "pubcrypt", "bound_service_account_namespaces": "default", "token_policies": "pubcrypt-producer",
	})
	sa := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(sa, []byte("header.payload.signature"), 0o600); err != nil {
		t.Fatal(err)
	}
	v := authVault(t, keyring.VaultAuth{Method: "kubernetes", Mount: "k8s-test", Role: "bridge", JWTFile: sa})
	_, err := v.GenerateDataKey(context.Background())
	if err == nil || (!errors.Is(err, keyring.ErrPermissionDenied) && !errors.Is(err, keyring.ErrUnavailable)) {
		t.Fatalf("kubernetes login without a cluster: %v; want an environment fault", err)
	}
	t.Logf("kubernetes login without a cluster: %v", err)
}

// selfSignedPEM is a throwaway CA certificate, for configuring Kubernetes auth.
func selfSignedPEM(t testing.TB) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test cluster"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

// TestCertLogin logs in with a TLS client certificate (auth/cert) on a Vault dev server
// that listens with TLS, the certificate and key given as Vault's own VAULT_CLIENT_CERT
// and VAULT_CLIENT_KEY: tokens of 2 s, at most 4 s, so a 10 s run logs in again and
// again over the same certificate. Every call goes through.
func TestCertLogin(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srv, err := devvault.Start(ctx, devvault.Options{TLSDir: t.TempDir(), Keys: []string{"cert-key"}})
	if err != nil {
		t.Fatalf("Vault dev server with TLS: %v", err)
	}
	defer srv.Stop()
	root, err := srv.Client()
	if err != nil {
		t.Fatal(err)
	}
	caPEM, certFile, keyFile := clientCertificate(t)
	enableAuth(t, root, "cert", "cert")
	if err := root.Sys().PutPolicy("cert-bridge", `path "transit/datakey/plaintext/cert-key" { capabilities = ["update"] }`); err != nil {
		t.Fatal(err)
	}
	vaultWrite(t, root, "auth/cert/certs/bridge", map[string]any{
		"certificate": caPEM, "token_policies": "cert-bridge", "token_ttl": "2s", "token_max_ttl": "4s",
	})
	t.Setenv("VAULT_ADDR", srv.Addr)
	t.Setenv("VAULT_CACERT", srv.CACert)
	t.Setenv("VAULT_CLIENT_CERT", certFile)
	t.Setenv("VAULT_CLIENT_KEY", keyFile)
	t.Setenv("VAULT_TOKEN", "")
	v, err := keyring.NewVault(keyring.VaultOptions{Key: "cert-key", Auth: keyring.VaultAuth{Method: "cert", Role: "bridge"}})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	calls := 0
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		calls++
		if _, err := v.GenerateDataKey(ctx); err != nil {
			t.Fatalf("call %d: %v", calls, err)
		}
	}
	t.Logf("cert login, token_ttl=2s token_max_ttl=4s, 10 s: %d calls, 0 failed, %d logins", calls, v.Logins())
	if v.Logins() < 2 {
		t.Errorf("logins = %d in 10 s with a 4 s max TTL, want at least 2", v.Logins())
	}

	// Without a client certificate the login is refused: an environment fault.
	t.Setenv("VAULT_CLIENT_CERT", "")
	t.Setenv("VAULT_CLIENT_KEY", "")
	bare, err := keyring.NewVault(keyring.VaultOptions{Key: "cert-key", Auth: keyring.VaultAuth{Method: "cert"}})
	if err != nil {
		t.Fatal(err)
	}
	defer bare.Close()
	if _, err := bare.GenerateDataKey(ctx); !errors.Is(err, keyring.ErrPermissionDenied) {
		t.Fatalf("cert login without a certificate: %v; want ErrPermissionDenied", err)
	}
}

// clientCertificate makes a CA and a client certificate it signed, and returns the CA's
// PEM and the files of the client's certificate and key.
func clientCertificate(t testing.TB) (caPEM, certFile, keyFile string) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "pubcrypt test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "pubcrypt-bridge"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "client.pem"), filepath.Join(dir, "client-key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})), certFile, keyFile
}
