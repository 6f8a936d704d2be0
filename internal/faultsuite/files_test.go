package faultsuite

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pubcrypt/pubcrypt/internal/filestream"
)

// Scenario 4, receive-files: killed with SIGKILL in the middle of a file, once the group
// has committed past some of its chunks, then started again. Every file must complete
// byte-identical without a re-send, and no canary of the files' contents may be on disk
// outside the completed files, at the kill or after (the partial state is kept
// encrypted). cmd/pubcrypt's TestReceiveFilesResumesAfterKill does this with a 300 MiB
// file; here three small text files full of canaries are counted like messages.
func TestReceiveFilesKilled(t *testing.T) {
	t.Parallel()
	const files, size, chunk, pauseAt = 3, 1 << 20, 64 << 10, 6
	r := newRig(t, rigOptions{})
	src, dest := t.TempDir(), t.TempDir() // the sources are plaintext by design; dest is scanned
	var paths []string
	for i := range files {
		var b bytes.Buffer
		for line := 0; b.Len() < size; line++ {
			fmt.Fprintf(&b, "file %d line %06d %s\n", i, line, r.canaries.add(fmt.Sprintf("file %d line %d", i, line)))
		}
		p := filepath.Join(src, fmt.Sprintf("report-%d.txt", i))
		if err := os.WriteFile(p, b.Bytes(), 0o600); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}

	// The sender: the first file whole, then the second up to chunk pauseAt, where it waits.
	cl, err := kgo.NewClient(kgo.SeedBrokers(r.kafka.Addrs...), kgo.DefaultProduceTopic(topicFiles))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	release := make(chan struct{})
	sent := 0 // messages sent, all files
	var firstMsgs int
	send := func(pause int) filestream.SendFunc {
		n := 0
		return func(ctx context.Context, body []byte, md map[string]string) error {
			if n++; n == pause {
				select {
				case <-release:
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			rec := &kgo.Record{Value: bytes.Clone(body)}
			for k, v := range md {
				rec.Headers = append(rec.Headers, kgo.RecordHeader{Key: k, Value: []byte(v)})
			}
			sent++
			return cl.ProduceSync(ctx, rec).FirstErr()
		}
	}
	st, err := filestream.SendFile(ctx, r.kr, paths[0], send(0), filestream.SendOptions{ChunkSize: chunk})
	if err != nil {
		t.Fatal(err)
	}
	firstMsgs = int(st.Messages)
	rest := make(chan error, 1)
	go func() {
		if _, err := filestream.SendFile(ctx, r.kr, paths[1], send(pauseAt), filestream.SendOptions{ChunkSize: chunk}); err != nil {
			rest <- err
			return
		}
		_, err := filestream.SendFile(ctx, r.kr, paths[2], send(0), filestream.SendOptions{ChunkSize: chunk})
		rest <- err
	}()

	env := r.env(r.vault.Token)
	args := []string{"receive-files", "--dir", dest, "--sub", "kafka://" + groupFiles + "?topic=" + topicFiles + "&offset=oldest"}
	rcv := r.start("receive-files", env, args...)
	// Killed once the group has committed past the first chunks of the second file: those
	// are acknowledged, so the restarted receiver must have kept them.
	waitFor(t, "the first file received and chunks of the second committed", waitLong, func() bool {
		return len(receivedFiles(rcv.stdout.String())) == 1 && r.committed(groupFiles, topicFiles) >= int64(firstMsgs+pauseAt-2)
	}, rcv)
	committedAt := r.committed(groupFiles, topicFiles)
	rcv.signal(syscall.SIGKILL, 30*time.Second)
	finals := map[string]bool{filepath.Join(dest, filepath.Base(paths[0])): true}
	atKill := r.scanDir(dest, func(path string, _ []string) bool { return !finals[path] })
	if len(atKill) > 0 {
		t.Errorf("plaintext of a file being received is on disk after the kill: %v", first(atKill, 5))
	}
	if _, err := os.Stat(filepath.Join(dest, filepath.Base(paths[1]))); err == nil {
		t.Errorf("the second file is visible under its final name before it was complete")
	}

	close(release)
	if err := <-rest; err != nil {
		t.Fatal(err)
	}
	rcv2 := r.start("receive-files, restarted", env, args...)
	waitFor(t, "every file received after the restart", waitLong, func() bool {
		return distinctFiles(rcv.stdout.String(), rcv2.stdout.String()) >= files
	}, rcv2)
	rcv2.stop(syscall.SIGINT)

	// Count the files like messages: received = byte-identical in dest.
	c := count{sent: files}
	for _, p := range paths {
		want, _ := os.ReadFile(p)
		got, err := os.ReadFile(filepath.Join(dest, filepath.Base(p)))
		switch {
		case err != nil:
		case !bytes.Equal(got, want):
			c.bad = append(c.bad, filepath.Base(p))
		default:
			c.received++
		}
	}
	c.lost = c.sent - c.received - len(c.bad)
	lines := len(receivedFiles(rcv.stdout.String())) + len(receivedFiles(rcv2.stdout.String()))
	c.dup = lines - distinctFiles(rcv.stdout.String(), rcv2.stdout.String())
	for _, p := range paths {
		finals[filepath.Join(dest, filepath.Base(p))] = true
	}
	hits := append(atKill, r.scanDir(dest, func(path string, _ []string) bool { return !finals[path] })...)
	if len(hits) > 0 {
		t.Errorf("plaintext left on disk besides the received files: %v", first(hits, 5))
	}
	leaked := r.checkLeaks() + len(hits)
	onTopic := len(r.readAll(topicFiles))
	if onTopic != sent {
		t.Errorf("%d chunk messages on the topic, %d sent: something was sent again", onTopic, sent)
	}
	record(t, result{id: "4.3", scenario: "receive-files SIGKILLed mid-file, restarted (3 × 1 MiB, 64 KiB chunks)", count: c, leaked: leaked, bound: 0,
		note: fmt.Sprintf("killed with the group committed at %d of %d messages (inside the second file); no re-send (%d messages on the topic); no canary on disk outside the completed files, at the kill or after", committedAt, sent, onTopic)})
}

var receivedLine = regexp.MustCompile(`(?m)^received (\S+): `)

// receivedFiles returns the paths receive-files reported received.
func receivedFiles(out string) []string {
	var paths []string
	for _, m := range receivedLine.FindAllStringSubmatch(out, -1) {
		paths = append(paths, m[1])
	}
	return paths
}

func distinctFiles(outs ...string) int {
	return distinct(receivedFiles(strings.Join(outs, "\n")))
}
