package devkms

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
)

// start starts a server for one test; a test that cannot start it fails.
func start(t *testing.T) *Server {
	t.Helper()
	s, err := Start(context.Background(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Stop() })
	return s
}

func TestStartCreateKeyRoundTrip(t *testing.T) {
	ctx := context.Background()
	begin := time.Now()
	s := start(t)
	t.Logf("local-kms ready at %s in %v", s.Endpoint, time.Since(begin))
	if !strings.HasPrefix(s.Endpoint, "http://127.0.0.1:") {
		t.Fatalf("Endpoint = %q, want http://127.0.0.1:PORT", s.Endpoint)
	}
	key, err := s.CreateKey(ctx, "devkms test")
	if err != nil {
		t.Fatal(err)
	}
	if want := "arn:aws:kms:" + Region + ":" + AccountID + ":key/" + key.ID; key.ARN != want {
		t.Errorf("ARN = %q, want %q", key.ARN, want)
	}
	c := s.Client()
	plain := []byte("0123456789abcdef0123456789abcdef")
	enc, err := c.Encrypt(ctx, &kms.EncryptInput{KeyId: aws.String(key.ARN), Plaintext: plain})
	if err != nil {
		t.Fatal(err)
	}
	dec, err := c.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: enc.CiphertextBlob})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(dec.Plaintext, plain) {
		t.Fatal("decrypt did not return the plaintext")
	}
	t.Logf("ciphertext of a 32-byte plaintext: %d bytes", len(enc.CiphertextBlob))

	if err := s.DisableKey(ctx, key.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Encrypt(ctx, &kms.EncryptInput{KeyId: aws.String(key.ARN), Plaintext: plain}); err == nil {
		t.Fatal("encrypt under a disabled key succeeded")
	}

	// Its own data directory, removed by Stop; then nothing answers on the port.
	dir := s.dir
	if _, err := os.Stat(filepath.Join(dir, "data")); err != nil {
		t.Errorf("data directory: %v", err)
	}
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	if s.PID() != 0 {
		t.Error("PID after Stop is not 0")
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("data directory after Stop: %v", err)
	}
	if conn, err := net.DialTimeout("tcp", strings.TrimPrefix(s.Endpoint, "http://"), time.Second); err == nil {
		conn.Close()
		t.Error("the port still answers after Stop")
	}
	if err := s.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
}

func TestEnvAndKeeperURL(t *testing.T) {
	s := &Server{Endpoint: "http://127.0.0.1:4599", Region: Region}
	env := strings.Join(s.Env(), "\n")
	for _, want := range []string{"AWS_ACCESS_KEY_ID=" + AccessKeyID, "AWS_REGION=eu-west-2", "AWS_ENDPOINT_URL_KMS=http://127.0.0.1:4599"} {
		if !strings.Contains(env, want) {
			t.Errorf("Env lacks %s", want)
		}
	}
	if got, want := s.KeeperURL("k1"), "awskms:///k1?endpoint=http%3A%2F%2F127.0.0.1%3A4599&region=eu-west-2"; got != want {
		t.Errorf("KeeperURL = %q, want %q", got, want)
	}
}

func TestFindBinary(t *testing.T) {
	t.Setenv("PUBCRYPT_LOCAL_KMS_BIN", filepath.Join(t.TempDir(), "missing"))
	if _, err := FindBinary(""); !errors.Is(err, ErrNoBinary) || !strings.Contains(err.Error(), "scripts/install-local-kms.sh") {
		t.Errorf("FindBinary with a missing $PUBCRYPT_LOCAL_KMS_BIN = %v, want ErrNoBinary naming the install script", err)
	}
	if _, err := Start(context.Background(), Options{}); !errors.Is(err, ErrNoBinary) {
		t.Errorf("Start with a missing binary = %v, want ErrNoBinary", err)
	}
	t.Setenv("PUBCRYPT_LOCAL_KMS_BIN", "")
	t.Setenv("PUBCRYPT_CACHE", t.TempDir())
	if _, err := FindBinary(""); !errors.Is(err, ErrNoBinary) {
		t.Errorf("FindBinary with an empty cache = %v, want ErrNoBinary", err)
	}
}

// A test binary that dies without calling Stop takes local-kms with it (Pdeathsig), and
// the emulator's own process group means kill reaches anything it started.
func TestOwnProcessGroup(t *testing.T) {
	s := start(t)
	pid := s.PID()
	pgid, err := getpgid(pid)
	if err != nil {
		t.Skipf("no process groups here: %v", err)
	}
	if pgid != pid {
		t.Errorf("local-kms pgid = %d, want its own group %d", pgid, pid)
	}
}
