package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"gocloud.dev/pubsub"

	"github.com/pubcrypt/pubcrypt/crypttopic"
	"github.com/pubcrypt/pubcrypt/internal/devkafka"
	"github.com/pubcrypt/pubcrypt/internal/devvault"
	"github.com/pubcrypt/pubcrypt/internal/purchase"
	"github.com/pubcrypt/pubcrypt/keyring"
)

// terraformDir holds the Vault configuration whose policies these tests prove.
const terraformDir = "../../terraform/vault"

var (
	// vaultServer is the real Vault dev server of every test in this package; if it cannot
	// be started the package fails.
	vaultServer *devvault.Server
	// names are the mount and key names, the defaults of terraform/vault/variables.tf.
	names tfNames
	// producerToken and consumerToken hold only the pubcrypt-producer and
	// pubcrypt-consumer policies of terraform/vault/main.tf (not even "default").
	producerToken, consumerToken string
	// forgetToken holds only the pubcrypt-forget policy.
	forgetToken string
)

func TestMain(m *testing.M) {
	code, err := run(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, "FAIL: e2e setup:", err)
		os.Exit(1)
	}
	os.Exit(code)
}

func run(m *testing.M) (int, error) {
	var err error
	if names, err = readNames(filepath.Join(terraformDir, "variables.tf")); err != nil {
		return 0, err
	}
	policies, err := readPolicies(filepath.Join(terraformDir, "main.tf"), names)
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if names.Subjects != devvault.SubjectNamingKey {
		return 0, fmt.Errorf("terraform's subject naming key is %q; devvault creates %q: adapt the test", names.Subjects, devvault.SubjectNamingKey)
	}
	if names.Mount != "transit" {
		return 0, fmt.Errorf("terraform's default transit mount is %q; devvault mounts transit at \"transit\": adapt the test", names.Mount)
	}
	// With pubcrypt's FPE plugin loaded and enabled where terraform mounts it
	// ($PUBCRYPT_FPE_PLUGIN_BIN, scripts/install-fpe-plugin.sh; without it the package fails).
	srv, err := devvault.Start(ctx, devvault.Options{Keys: []string{names.Data}, FPEPluginMount: names.FPEPluginMount})
	if err != nil {
		return 0, fmt.Errorf("cannot start the Vault dev server these tests need: %w", err)
	}
	defer srv.Stop()
	vaultServer = srv
	if err := srv.CreateFieldKeys(ctx, names.Deterministic, names.FPE); err != nil {
		return 0, err
	}
	if err := srv.CreateFPEPluginKey(ctx, names.FPEPluginMount, names.FPEPluginKey); err != nil {
		return 0, err
	}
	// As terraform/vault/main.tf does (disable_upsert defaults to true): an encrypt call
	// never creates a missing key.
	root, err := srv.Client()
	if err != nil {
		return 0, err
	}
	if _, err := root.Logical().WriteWithContext(ctx, names.Mount+"/config/keys", map[string]any{"disable_upsert": true}); err != nil {
		return 0, fmt.Errorf("set disable_upsert: %w", err)
	}
	if producerToken, err = srv.CreateToken(ctx, "pubcrypt-producer", policies["producer"]); err != nil {
		return 0, err
	}
	if consumerToken, err = srv.CreateToken(ctx, "pubcrypt-consumer", policies["consumer"]); err != nil {
		return 0, err
	}
	if forgetToken, err = srv.CreateToken(ctx, "pubcrypt-forget", policies["forget"]); err != nil {
		return 0, err
	}
	return m.Run(), nil
}

// tfNames are the transit mount and key names of the Terraform configuration, and the
// mount and key of the FPE plugin.
type tfNames struct {
	Mount, Data, Deterministic, FPE string
	FPEPluginMount, FPEPluginKey    string
	Subjects                        string
}

// readNames reads the string defaults of the mount and key variables.
func readNames(path string) (tfNames, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return tfNames{}, err
	}
	get := func(name string) (string, error) {
		re := regexp.MustCompile(`(?s)variable "` + regexp.QuoteMeta(name) + `" \{[^}]*?\n\s*default\s*=\s*"([^"]*)"`)
		mm := re.FindSubmatch(b)
		if mm == nil {
			return "", fmt.Errorf("%s: no string default for variable %q", path, name)
		}
		return string(mm[1]), nil
	}
	var n tfNames
	for _, f := range []struct {
		dst  *string
		name string
	}{{&n.Mount, "transit_mount"}, {&n.Data, "data_key_name"}, {&n.Deterministic, "deterministic_key_name"}, {&n.FPE, "fpe_key_name"},
		{&n.FPEPluginMount, "fpe_plugin_mount"}, {&n.FPEPluginKey, "fpe_plugin_key_name"},
		{&n.Subjects, "subject_naming_key_name"}} {
		if *f.dst, err = get(f.name); err != nil {
			return tfNames{}, err
		}
	}
	return n, nil
}

// readPolicies extracts the HCL of the vault_policy resources "producer", "consumer" and "forget"
// (their <<-EOT heredocs) from main.tf and fills in the Terraform references with names.
// A reference it does not know fails the tests, so that a change to the Terraform is
// noticed here.
func readPolicies(path string, n tfNames) (map[string]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	refs := strings.NewReplacer(
		"${local.mount}", n.Mount,
		"${vault_transit_secret_backend_key.data.name}", n.Data,
		"${vault_transit_secret_backend_key.deterministic.name}", n.Deterministic,
		"${vault_transit_secret_backend_key.fpe.name}", n.FPE,
		"${local.fpe_mount}", n.FPEPluginMount,
		"${local.fpe_key}", n.FPEPluginKey,
		"${vault_transit_secret_backend_key.subjects.name}", n.Subjects,
	)
	out := map[string]string{}
	for _, role := range []string{"producer", "consumer", "forget"} {
		re := regexp.MustCompile(`(?s)resource "vault_policy" "` + role + `" \{.*?\bpolicy\s*=\s*<<-EOT\n(.*?)\n[ \t]*EOT\n`)
		mm := re.FindSubmatch(b)
		if mm == nil {
			return nil, fmt.Errorf("%s: no heredoc policy in resource vault_policy.%s", path, role)
		}
		hcl := refs.Replace(string(mm[1]))
		if i := strings.Index(hcl, "${"); i >= 0 {
			return nil, fmt.Errorf("%s: vault_policy.%s uses a reference the test does not know: %.60s", path, role, hcl[i:])
		}
		if !strings.Contains(hcl, `path "`) {
			return nil, fmt.Errorf("%s: vault_policy.%s has no path rules", path, role)
		}
		out[role] = hcl
	}
	return out, nil
}

// vaultWith returns a keyring on the package's Vault server that authenticates with token.
func vaultWith(t testing.TB, token string) *keyring.Vault {
	t.Helper()
	c, err := vaultServer.Client()
	if err != nil {
		t.Fatal(err)
	}
	c.SetToken(token)
	v, err := keyring.NewVault(keyring.VaultOptions{Client: c, Key: names.Data, FPEMount: names.FPEPluginMount})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// fieldKeys names the Terraform's keys for the field modes.
func fieldKeys() crypttopic.FieldKeys {
	return crypttopic.FieldKeys{Transit: names.Data, Deterministic: names.Deterministic, FPE: names.FPE}
}

// newKafka starts an in-process broker on a free port with the given topics and points
// the kafka:// opener at it.
func newKafka(t *testing.T, topics ...string) *devkafka.Broker {
	t.Helper()
	b, err := devkafka.Start(devkafka.Options{Topics: topics})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	t.Setenv("KAFKA_BROKERS", b.Addrs[0])
	return b
}

// purchases returns n generated purchases and their JSON bodies.
func purchases(seed uint64, n int) ([]purchase.Purchase, [][]byte) {
	gen := purchase.NewGenerator(seed)
	ps := make([]purchase.Purchase, n)
	bodies := make([][]byte, n)
	for i := range ps {
		ps[i] = gen.Next()
		bodies[i], _ = json.Marshal(ps[i])
	}
	return ps, bodies
}

// messages makes one message per purchase, with the order ID as (clear) metadata.
func messages(ps []purchase.Purchase, bodies [][]byte) []*pubsub.Message {
	out := make([]*pubsub.Message, len(ps))
	for i := range ps {
		out[i] = &pubsub.Message{Body: bodies[i], Metadata: map[string]string{"order": ps[i].ID}}
	}
	return out
}

// readRaw reads every record of topic from the start with a plain Kafka client, no
// decryption, until want records have been read or the timeout.
func readRaw(t *testing.T, b *devkafka.Broker, topic string, n int) []*kgo.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rs, err := b.ReadRaw(ctx, topic, n)
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

// produceRaw writes records straight to the broker, bypassing pubcrypt.
func produceRaw(t *testing.T, b *devkafka.Broker, rs ...*kgo.Record) {
	t.Helper()
	if err := b.ProduceRaw(context.Background(), rs...); err != nil {
		t.Fatal(err)
	}
}

// checkNoSecrets fails if err's text contains a Vault token.
func checkNoSecrets(t *testing.T, what string, err error) {
	t.Helper()
	msg := err.Error()
	for _, tok := range []string{producerToken, consumerToken, vaultServer.Token} {
		if tok != "" && strings.Contains(msg, tok) {
			t.Errorf("%s: error text contains a Vault token: %s", what, msg)
		}
	}
	if strings.Contains(msg, "hvs.") {
		t.Errorf("%s: error text contains something that looks like a Vault token (hvs.): %s", what, msg)
	}
}
