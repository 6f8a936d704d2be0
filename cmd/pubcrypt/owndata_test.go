package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

// readmeOwnData returns the shell commands of README's "Your own data" section.
func readmeOwnData(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(b), "<!-- own-data:begin -->\n```sh\n")
	block, _, ok2 := strings.Cut(rest, "```\n<!-- own-data:end -->")
	if !ok || !ok2 {
		t.Fatal("README.md has no own-data block")
	}
	return block
}

// TestOwnDataThroughJQ runs README's "Your own data" commands as they are written, with
// bash, the real jq and the pubcrypt binary on PATH, against a real Vault and kfake:
// produce --from - < my.jsonl, the encrypt bridge, consume --output json | jq. Every
// body and metadata entry comes out as it went in; summaries are not on stdout.
func TestOwnDataThroughJQ(t *testing.T) {
	if _, err := exec.LookPath("jq"); err != nil {
		t.Fatal("jq is needed (scripts/install-test-tools.sh installs it):", err)
	}
	env := startVault(t)
	kafka := startKafka(t, topicPlain, topicEncrypted)
	dir := t.TempDir()
	bin := cliBinary(t)
	cmd := exec.Command("bash", "-euo", "pipefail", "-c", readmeOwnData(t))
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env.env...)
	cmd.Env = append(cmd.Env, "KAFKA_BROKERS="+kafka.Addrs[0], "PATH="+filepath.Dir(bin)+":"+os.Getenv("PATH"))
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("README commands: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
		}
	case <-time.After(2 * time.Minute):
		_ = cmd.Process.Kill()
		t.Fatalf("README commands still running after 2m\nstderr:\n%s", stderr.String())
	}

	var got []string
	for _, l := range strings.Split(stdout.String(), "\n") {
		if strings.HasPrefix(l, "{") {
			got = append(got, l)
		}
		if strings.Contains(l, "decrypted") {
			t.Errorf("consume's summary is on stdout: %q", l)
		}
	}
	want := []string{
		`{"body":{"order":"A-1","amount":12.5,"email":"ana@example.com"},"body_base64":null,"metadata":{"key":"A-1","source":"shop"}}`,
		`{"body":null,"body_base64":"cGxhaW4gdGV4dCwgbm90IEpTT04=","metadata":{"source":"legacy"}}`,
		`{"body":{"order":"A-2","amount":7,"note":"a line without body is the body"},"body_base64":null,"metadata":{}}`,
	}
	sort.Strings(got)
	sort.Strings(want)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("jq saw:\n%s\nwant (in any order):\n%s\nstderr:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"), stderr.String())
	}
	if !strings.Contains(stderr.String(), "3 message(s) decrypted") {
		t.Errorf("consume's summary is not on stderr:\n%s", stderr.String())
	}
	// The README shows exactly this output.
	readme, _ := os.ReadFile("../../README.md")
	for _, w := range want {
		if !strings.Contains(string(readme), w+"\n") {
			t.Errorf("README does not show the output line %s", w)
		}
	}
}
