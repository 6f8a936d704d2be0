package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gocloud.dev/pubsub"

	"github.com/pubcrypt/pubcrypt/internal/broker"
	"github.com/pubcrypt/pubcrypt/internal/devkafka"
	"github.com/pubcrypt/pubcrypt/internal/devvault"
	"github.com/pubcrypt/pubcrypt/internal/filestream"
	"github.com/pubcrypt/pubcrypt/internal/netfault"
)

// TestReceiveFilesRidesOutOutages: receive-files, running as a process, meets a broker
// stopped for 12 s in the middle of a file and then Vault cut off when the next file
// begins. It keeps running, acknowledges nothing it could not store, and both files
// arrive byte-identical; SIGINT then exits 0.
func TestReceiveFilesRidesOutOutages(t *testing.T) {
	const topic, group, chunk = "files", "pubcrypt-files", 64 << 10
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	fe := startVault(t)
	kr := fe.keyring(t) // the sender talks to Vault directly; only the receiver goes through the proxy
	vaultProxy, err := netfault.Listen(strings.TrimPrefix(fe.vault.Addr, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer vaultProxy.Close()
	kafka, err := devkafka.Start(devkafka.Options{Topics: []string{topic}, DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kafka.Close)
	t.Setenv(broker.EnvKafkaBrokers, kafka.Addrs[0])

	src, dst := t.TempDir(), t.TempDir()
	files := map[string][]byte{"a.bin": make([]byte, 12*chunk+100), "b.bin": make([]byte, 5*chunk+7)}
	for name, data := range files {
		_, _ = rand.Read(data)
		if err := os.WriteFile(filepath.Join(src, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// send sends a file, chunk by chunk, pausing before chunk pause until release is
	// closed, and reopening the topic when a send fails (the broker restarts meanwhile).
	send := func(name string, pause uint64, release <-chan struct{}) error {
		var top *pubsub.Topic
		defer func() {
			if top != nil {
				_ = shutdown(top)
			}
		}()
		var n uint64
		_, err := filestream.SendFile(ctx, kr, filepath.Join(src, name), func(ctx context.Context, body []byte, md map[string]string) error {
			if pause > 0 && n == pause {
				<-release
			}
			n++
			for {
				if top == nil {
					var oerr error
					if top, oerr = broker.OpenTopic(ctx, "kafka://"+topic); oerr != nil {
						top = nil
					}
				}
				if top != nil {
					if err := top.Send(ctx, &pubsub.Message{Body: body, Metadata: md}); err == nil {
						return nil
					}
					go shutdown(top)
					top = nil
				}
				select {
				case <-time.After(500 * time.Millisecond):
				case <-ctx.Done():
					return ctx.Err()
				}
			}
		}, filestream.SendOptions{ChunkSize: chunk})
		return err
	}

	release := make(chan struct{})
	sentA := make(chan error, 1)
	go func() { sentA <- send("a.bin", 6, release) }() // header + 5 chunks, then wait

	env := []string{broker.EnvKafkaBrokers + "=" + kafka.Addrs[0], "VAULT_ADDR=http://" + vaultProxy.Addr(), "VAULT_TOKEN=" + fe.vault.Token}
	p := startCLI(t, env, "receive-files", "--dir", dst, "--sub", "kafka://"+group+"?topic="+topic+"&offset=oldest")

	// Half of a.bin is stored (the group has committed past it): stop the broker.
	deadline := time.Now().Add(time.Minute)
	for {
		off, err := kafka.CommittedOffset(ctx, group, topic, 0)
		if err == nil && off >= 6 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("receive-files did not store the first chunks (committed %d, %v)\n%s", off, err, tail(p.stderr.String()))
		}
		time.Sleep(200 * time.Millisecond)
	}
	kafka.Stop()
	t.Log("broker stopped in the middle of a.bin")
	time.Sleep(12 * time.Second)
	select {
	case <-p.exited:
		t.Fatalf("receive-files exited during the broker outage: %v\n%s", p.waitErr, tail(p.stderr.String()))
	default:
	}
	if err := kafka.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	close(release)
	if err := <-sentA; err != nil {
		t.Fatal(err)
	}
	p.waitFor("a.bin received", 2*time.Minute, func(out string) bool { return strings.Contains(out, "received "+filepath.Join(dst, "a.bin")) })
	t.Log("a.bin received after the broker restart")

	// Vault cut off when b.bin begins: its data key cannot be unwrapped.
	vaultProxy.Cut()
	if err := send("b.bin", 0, nil); err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Second)
	select {
	case <-p.exited:
		t.Fatalf("receive-files exited during the Vault outage: %v\n%s", p.waitErr, tail(p.stderr.String()))
	default:
	}
	if _, err := os.Stat(filepath.Join(dst, "b.bin")); err == nil {
		t.Fatal("b.bin in place while Vault was cut off")
	}
	vaultProxy.Pass()
	p.waitFor("b.bin received", 2*time.Minute, func(out string) bool { return strings.Contains(out, "received "+filepath.Join(dst, "b.bin")) })
	took, code := p.interrupt(30 * time.Second)
	if code != exitOK || took > interruptLimit {
		t.Fatalf("exit %d after %v on SIGINT, want 0 within 2s\n%s", code, took, tail(p.stderr.String()))
	}
	for name, want := range files {
		got, err := os.ReadFile(filepath.Join(dst, name))
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%s did not arrive intact: %v", name, err)
		}
	}
	if strings.Contains(p.stdout.String(), "refused:") {
		t.Fatalf("a transfer was refused for an outage:\n%s", p.stdout.String())
	}
	t.Logf("both files byte-identical across a 12 s broker outage and a 5 s Vault outage; SIGINT: exit 0 after %v; outages logged:\n%s",
		took.Round(time.Millisecond), outageLines(p.stderr.String()))
}

// TestReceiveFilesExpiredToken: with an expired Vault token, receive-files used to refuse
// the transfers (a message fault) and acknowledge their chunks, so a rerun with a good
// token in the same group got nothing back. A refused token is a fault of the
// environment: nothing is refused, written or acknowledged (here the outage is bounded
// by --max-outage: exit 3), and the rerun with a good token finishes every file.
func TestReceiveFilesExpiredToken(t *testing.T) {
	const topic, group, chunk = "files", "pubcrypt-files", 64 << 10
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	fe := startVault(t)
	kr := fe.keyring(t)
	kafka := startKafka(t, topic)
	t.Setenv(broker.EnvKafkaBrokers, kafka.Addrs[0])

	src, dst := t.TempDir(), t.TempDir()
	files := map[string][]byte{"a.bin": make([]byte, 7*chunk+100), "b.bin": make([]byte, 3*chunk+7)}
	top, err := broker.OpenTopic(ctx, "kafka://"+topic)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"a.bin", "b.bin"} {
		data := files[name]
		_, _ = rand.Read(data)
		if err := os.WriteFile(filepath.Join(src, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := filestream.SendFile(ctx, kr, filepath.Join(src, name), func(ctx context.Context, body []byte, md map[string]string) error {
			return top.Send(ctx, &pubsub.Message{Body: body, Metadata: md})
		}, filestream.SendOptions{ChunkSize: chunk}); err != nil {
			t.Fatal(err)
		}
	}
	if err := shutdown(top); err != nil {
		t.Fatal(err)
	}

	token, err := fe.vault.CreateTokenWith(ctx, devvault.TokenOptions{Policy: "files-receiver",
		PolicyHCL: `path "transit/decrypt/pubcrypt" { capabilities = ["update"] }`, TTL: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second) // expired
	args := []string{"receive-files", "--dir", dst, "--sub", "kafka://" + group + "?topic=" + topic + "&offset=oldest"}
	expired := []string{broker.EnvKafkaBrokers + "=" + kafka.Addrs[0], "VAULT_ADDR=" + fe.vault.Addr, "VAULT_TOKEN=" + token}
	p := startCLI(t, expired, append(args, "--max-outage", "3s")...)
	code, _ := p.wait(time.Minute)
	t.Logf("expired token: exit %d: %s", code, lastLine(p.stderr.String()))
	if code != exitEnvironment || strings.Contains(p.stdout.String(), "refused:") || !strings.Contains(p.stdout.String(), " 0 refused") || !strings.Contains(p.stderr.String(), "permission denied") {
		t.Fatalf("expired token: exit %d, want %d with nothing refused and the refusal named\nstdout:\n%s\nstderr:\n%s",
			code, exitEnvironment, tail(p.stdout.String()), tail(p.stderr.String()))
	}
	if off, err := kafka.CommittedOffset(ctx, group, topic, 0); err != nil || off > 0 {
		t.Fatalf("committed offset %d, %v after the expired token: chunks were acknowledged", off, err)
	}
	if entries, _ := os.ReadDir(dst); len(entries) > 0 {
		for _, e := range entries {
			if !strings.HasPrefix(e.Name(), ".pubcrypt-") {
				t.Fatalf("%s written with an expired token", e.Name())
			}
		}
	}

	p = startCLI(t, append([]string{broker.EnvKafkaBrokers + "=" + kafka.Addrs[0]}, fe.env...), append(args, "--max-files", "2")...)
	if code, _ := p.wait(2 * time.Minute); code != exitOK {
		t.Fatalf("good token: exit %d\nstdout:\n%s\nstderr:\n%s", code, tail(p.stdout.String()), tail(p.stderr.String()))
	}
	for name, want := range files {
		got, err := os.ReadFile(filepath.Join(dst, name))
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%s did not arrive intact after the rerun with a good token: %v\n%s", name, err, tail(p.stdout.String()))
		}
	}
	t.Logf("rerun with a good token in the same group: 2 of 2 files byte-identical")
}
