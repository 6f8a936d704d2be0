package devbrokers

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	raw "cloud.google.com/go/pubsub/apiv1"
	pb "cloud.google.com/go/pubsub/apiv1/pubsubpb"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/pubcrypt/pubcrypt/internal/devproc"
)

// ErrNoPubSubEmulator is returned by StartPubSubEmulator when the emulator is not
// installed.
var ErrNoPubSubEmulator = errors.New("Google Pub/Sub emulator not found: install the Debian package " +
	"google-cloud-cli-pubsub-emulator (or `gcloud components install pubsub-emulator`), or set " +
	"PUBCRYPT_PUBSUB_EMULATOR to its launcher (SDK_ROOT/platform/pubsub-emulator/bin/cloud-pubsub-emulator); it needs Java")

// Emulator is a running Google Pub/Sub emulator. It keeps everything in memory and
// enforces none of Pub/Sub's attribute limits.
type Emulator struct {
	// HostPort is the address to put in PUBSUB_EMULATOR_HOST: 127.0.0.1:PORT.
	HostPort string
	// Startup is how long the emulator took to answer.
	Startup time.Duration

	child *child
}

// StartPubSubEmulator starts the Google Pub/Sub emulator on a free port of 127.0.0.1 and
// waits until it answers. The launcher is $PUBCRYPT_PUBSUB_EMULATOR, else the one under the
// Google Cloud SDK root (`gcloud info`), else under /usr/lib/google-cloud-sdk. The caller
// must Stop it.
func StartPubSubEmulator(ctx context.Context) (*Emulator, error) {
	launcher, err := FindPubSubEmulator(ctx)
	if err != nil {
		return nil, err
	}
	ctx, cancel := withStartTimeout(ctx)
	defer cancel()
	const tries = 3 // the free port can be taken before the JVM binds it
	for try := 1; ; try++ {
		e, err := startEmulator(ctx, launcher)
		if err == nil || try == tries || ctx.Err() != nil {
			return e, err
		}
	}
}

func startEmulator(ctx context.Context, launcher string) (*Emulator, error) {
	port, err := freePort()
	if err != nil {
		return nil, fmt.Errorf("devbrokers: find a free port: %w", err)
	}
	hostPort := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	began := time.Now()
	cmd := exec.Command(launcher, "--host=127.0.0.1", "--port="+strconv.Itoa(port))
	// The emulator's data directory defaults to the working directory; keep it out of
	// the source tree.
	cmd.Dir = os.TempDir()
	c, err := startChild("pubsub-emulator", cmd)
	if err != nil {
		return nil, err
	}
	client := &http.Client{Timeout: time.Second}
	// The emulator answers "Ok" on HTTP GET / once its gRPC server is up.
	err = c.waitReady(ctx, func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+hostPort+"/", nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 64))
		if resp.StatusCode != http.StatusOK || !strings.HasPrefix(string(body), "Ok") {
			return fmt.Errorf("GET / answered %s %q", resp.Status, body)
		}
		return nil
	})
	if err != nil {
		c.stop()
		return nil, err
	}
	return &Emulator{HostPort: hostPort, Startup: time.Since(began), child: c}, nil
}

// Stop kills the emulator (its whole process group). It is safe to call more than once.
func (e *Emulator) Stop() { e.child.stop() }

// FindPubSubEmulator returns the launcher StartPubSubEmulator runs, or an error wrapping
// ErrNoPubSubEmulator.
func FindPubSubEmulator(ctx context.Context) (string, error) {
	if p := os.Getenv("PUBCRYPT_PUBSUB_EMULATOR"); p != "" {
		if !devproc.IsExecutable(p) {
			return "", fmt.Errorf("devbrokers: $PUBCRYPT_PUBSUB_EMULATOR=%q is not an executable file: %w", p, ErrNoPubSubEmulator)
		}
		return p, nil
	}
	var roots []string
	if gcloud, err := exec.LookPath("gcloud"); err == nil {
		qctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		out, err := exec.CommandContext(qctx, gcloud, "info", "--format=value(installation.sdk_root)").Output()
		cancel()
		if root := strings.TrimSpace(string(out)); err == nil && root != "" {
			roots = append(roots, root)
		}
	}
	roots = append(roots, "/usr/lib/google-cloud-sdk", "/usr/share/google-cloud-sdk")
	for _, root := range roots {
		p := filepath.Join(root, "platform", "pubsub-emulator", "bin", "cloud-pubsub-emulator")
		if devproc.IsExecutable(p) {
			if _, err := exec.LookPath("java"); err != nil {
				return "", fmt.Errorf("devbrokers: %s needs java on PATH (Debian: default-jre-headless): %w", p, ErrNoPubSubEmulator)
			}
			return p, nil
		}
	}
	return "", fmt.Errorf("devbrokers: looked under %s: %w", strings.Join(roots, ", "), ErrNoPubSubEmulator)
}

// dialAdmin opens the admin clients of the emulator, as gcppubsub's URL opener does when
// PUBSUB_EMULATOR_HOST is set: plaintext gRPC, no credentials.
func (e *Emulator) dialAdmin(ctx context.Context) (*raw.PublisherClient, *raw.SubscriberClient, func(), error) {
	conn, err := grpc.NewClient(e.HostPort, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, nil, nil, err
	}
	pub, err := raw.NewPublisherClient(ctx, option.WithGRPCConn(conn))
	if err != nil {
		conn.Close()
		return nil, nil, nil, err
	}
	sub, err := raw.NewSubscriberClient(ctx, option.WithGRPCConn(conn))
	if err != nil {
		conn.Close()
		return nil, nil, nil, err
	}
	return pub, sub, func() { _ = conn.Close() }, nil
}

// CreateTopic creates projects/project/topics/topic.
func (e *Emulator) CreateTopic(ctx context.Context, project, topic string) error {
	pub, _, done, err := e.dialAdmin(ctx)
	if err != nil {
		return fmt.Errorf("devbrokers: dial emulator: %w", err)
	}
	defer done()
	if _, err := pub.CreateTopic(ctx, &pb.Topic{Name: "projects/" + project + "/topics/" + topic}); err != nil {
		return fmt.Errorf("devbrokers: create topic %s: %w", topic, err)
	}
	return nil
}

// CreateSubscription creates projects/project/subscriptions/sub on the project's topic,
// with the given ack deadline (10 s if zero: a nacked message comes back at once anyway).
func (e *Emulator) CreateSubscription(ctx context.Context, project, sub, topic string, ackDeadline time.Duration) error {
	_, subc, done, err := e.dialAdmin(ctx)
	if err != nil {
		return fmt.Errorf("devbrokers: dial emulator: %w", err)
	}
	defer done()
	if ackDeadline <= 0 {
		ackDeadline = 10 * time.Second
	}
	_, err = subc.CreateSubscription(ctx, &pb.Subscription{
		Name:               "projects/" + project + "/subscriptions/" + sub,
		Topic:              "projects/" + project + "/topics/" + topic,
		AckDeadlineSeconds: int32(ackDeadline / time.Second),
	})
	if err != nil {
		return fmt.Errorf("devbrokers: create subscription %s: %w", sub, err)
	}
	return nil
}
