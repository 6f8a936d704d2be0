package encurl_test

import (
	"context"
	"testing"
	"time"

	"gocloud.dev/pubsub"

	"github.com/pubcrypt/pubcrypt/internal/devvault"
)

// TestAppRoleByURL logs both sides in with AppRole from URL parameters alone, with no
// VAULT_TOKEN in the environment, against the real Vault: what a deployment that
// changes only its URLs and mounts a role ID and a secret ID gets.
func TestAppRoleByURL(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	root, err := vaultServer.Client()
	if err != nil {
		t.Fatal(err)
	}
	if err := root.Sys().PutPolicyWithContext(ctx, "root-like", `path "transit/*" { capabilities = ["update", "read"] }`); err != nil {
		t.Fatal(err)
	}
	roleFile, secretFile, err := vaultServer.CreateAppRole(ctx, t.TempDir(), devvault.AppRole{Mount: "approle-url", Name: "app", Policy: "root-like", TokenTTL: "5s", TokenMaxTTL: "10s"})
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("VAULT_TOKEN", "")
	q := "?vault_auth=approle&vault_auth_mount=approle-url&vault_role_id_file=" + roleFile + "&vault_secret_id_file=" + secretFile
	open(t, ctx, "mem://approle-url")
	top, err := pubsub.OpenTopic(ctx, "enc+mem://approle-url"+q+"&fields=name%3Dtransit")
	if err != nil {
		t.Fatal(err)
	}
	sub := subscribe(t, ctx, "enc+mem://approle-url"+q)
	// Past a 10 s max TTL: the second half of the messages needs a new login.
	var sent [][]byte
	for i := range 12 {
		body := []byte(`{"name":"Customer ` + string(rune('A'+i)) + `"}`)
		sent = append(sent, body)
		if err := top.Send(ctx, &pubsub.Message{Body: body}); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
		time.Sleep(time.Second)
	}
	if err := top.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{}
	for _, b := range sent {
		want[string(b)] = true
	}
	for _, m := range receive(t, ctx, sub, len(sent)) {
		if !want[string(m.Body)] {
			t.Fatalf("received %s, which was not sent (or twice)", m.Body)
		}
		delete(want, string(m.Body))
	}
}
