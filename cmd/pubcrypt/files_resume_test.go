package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"gocloud.dev/pubsub"

	"github.com/pubcrypt/pubcrypt/internal/broker"
	"github.com/pubcrypt/pubcrypt/internal/devkafka"
	"github.com/pubcrypt/pubcrypt/internal/devvault"
	"github.com/pubcrypt/pubcrypt/internal/filestream"
	"github.com/pubcrypt/pubcrypt/keyring"
)

// fileRig is what the receive-files tests run against: a real Vault dev server, a kfake
// broker in this process, and the pubcrypt binary, run as a child process as a user
// would (so that it can be killed).
type fileRig struct {
	kafka *devkafka.Broker
	kr    *keyring.Vault
	bin   string
}

func newFileRig(t *testing.T, ctx context.Context, topics ...string) *fileRig {
	t.Helper()
	vault, err := devvault.Start(ctx, devvault.Options{Keys: []string{demoKey}})
	if err != nil {
		t.Fatalf("Vault dev server: %v", err)
	}
	t.Cleanup(func() { vault.Stop() })
	kafka, err := devkafka.Start(devkafka.Options{Topics: topics})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kafka.Close)
	t.Setenv(broker.EnvKafkaBrokers, kafka.Addrs[0])
	for _, kv := range vault.Env() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	c, _ := vault.Client()
	kr, err := keyring.NewVault(keyring.VaultOptions{Client: c, Key: demoKey})
	if err != nil {
		t.Fatal(err)
	}
	return &fileRig{kafka: kafka, kr: kr, bin: cliBinary(t)}
}

// receiveCmd is `pubcrypt receive-files` reading topic as group into dir.
func (rig *fileRig) receiveCmd(ctx context.Context, dir, group, topic string, extra ...string) *exec.Cmd {
	args := append([]string{"receive-files", "--dir", dir, "--sub", "kafka://" + group + "?topic=" + topic + "&offset=oldest"}, extra...)
	return exec.CommandContext(ctx, rig.bin, args...)
}

// committed returns the offset group has committed on partition 0 of topic (the next
// record it will read), or -1 if none: what the receiver acknowledged.
func (rig *fileRig) committed(ctx context.Context, group, topic string) (int64, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(rig.kafka.Addrs...))
	if err != nil {
		return 0, err
	}
	defer cl.Close()
	req := kmsg.NewPtrOffsetFetchRequest()
	req.Group = group
	rt := kmsg.NewOffsetFetchRequestTopic()
	rt.Topic, rt.Partitions = topic, []int32{0}
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return 0, err
	}
	if err := kerr.ErrorForCode(resp.ErrorCode); errors.Is(err, kerr.GroupIDNotFound) {
		return -1, nil // the group never joined
	} else if err != nil {
		return 0, err
	}
	for _, t := range resp.Topics {
		for _, p := range t.Partitions {
			if t.Topic == topic && p.Partition == 0 {
				return p.Offset, kerr.ErrorForCode(p.ErrorCode)
			}
		}
	}
	return -1, nil
}

// runReceive runs receive-files to its end and returns its exit error, stdout and stderr.
func (rig *fileRig) runReceive(t *testing.T, ctx context.Context, dir, group, topic string, extra ...string) (error, string, string) {
	t.Helper()
	cmd := rig.receiveCmd(ctx, dir, group, topic, extra...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return err, stdout.String(), stderr.String()
}

// send sends the file at path to topic, in chunks of chunk bytes. With pause > 0 it
// stops before chunk pause (chunk 0 is the header) until release is closed.
func (rig *fileRig) send(ctx context.Context, topic, path string, chunk int, pause uint64, release <-chan struct{}) (filestream.Stats, error) {
	top, err := broker.OpenTopic(ctx, "kafka://"+topic)
	if err != nil {
		return filestream.Stats{}, err
	}
	defer shutdown(top)
	var sent uint64
	return filestream.SendFile(ctx, rig.kr, path, func(ctx context.Context, body []byte, md map[string]string) error {
		if pause > 0 && sent == pause {
			select {
			case <-release:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		sent++
		return top.Send(ctx, &pubsub.Message{Body: body, Metadata: md})
	}, filestream.SendOptions{ChunkSize: chunk})
}

// randomFile writes size random bytes (a ChaCha8 stream from seed) to path.
func randomFile(t *testing.T, path string, size int64, seed byte) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := io.CopyN(f, rand.NewChaCha8([32]byte{seed}), size); err != nil {
		t.Fatal(err)
	}
}

// sameFile fails unless the files at a and b hold the same bytes.
func sameFile(t *testing.T, a, b string) {
	t.Helper()
	fa, err := os.Open(a)
	if err != nil {
		t.Fatal(err)
	}
	defer fa.Close()
	fb, err := os.Open(b)
	if err != nil {
		t.Fatal(err)
	}
	defer fb.Close()
	ba, bb := make([]byte, 1<<20), make([]byte, 1<<20)
	for off := int64(0); ; off += int64(len(ba)) {
		na, ea := io.ReadFull(fa, ba)
		nb, _ := io.ReadFull(fb, bb)
		if na != nb || !bytes.Equal(ba[:na], bb[:nb]) {
			t.Fatalf("%s and %s differ near offset %d", a, b, off)
		}
		if ea != nil {
			return
		}
	}
}

// onlyFiles fails unless dir holds exactly names plus, optionally, the receiver's record
// of completed transfers (transfer IDs only).
func onlyFiles(t *testing.T, dir string, names ...string) {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range es {
		if e.Name() != ".pubcrypt-partial-received" {
			got = append(got, e.Name())
		}
	}
	if strings.Join(got, "\n") != strings.Join(names, "\n") {
		t.Fatalf("%s holds %q, want %q", dir, got, names)
	}
}

// plaintextWatch looks for the plaintext of a source file in the files of a directory,
// at any offset: anchors are the source positions holding a zero byte followed by a
// byte below 16 (one per 4 KiB on average in random data), keyed by the 8 bytes after;
// each anchor found in a file places a 4 KiB-aligned source block there, which is then
// compared byte for byte. It counts, per file, the distinct source blocks found.
type plaintextWatch struct {
	src     *os.File
	size    int64
	anchors map[uint64]int64 // key → source offset of the anchor

	mu        sync.Mutex
	most      map[string]int // file name → most source blocks seen in it at once
	scans     int
	finalName string // the file's own name: allowed only complete
	partial   []string
}

const watchBlock = 4096

func newPlaintextWatch(t *testing.T, path, finalName string) *plaintextWatch {
	t.Helper()
	src, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	fi, _ := src.Stat()
	w := &plaintextWatch{src: src, size: fi.Size(), anchors: map[uint64]int64{}, most: map[string]int{}, finalName: finalName}
	w.eachAnchor(src, func(off int64, key uint64) { w.anchors[key] = off })
	return w
}

// eachAnchor calls fn with the offset and key of every anchor in r.
func (w *plaintextWatch) eachAnchor(r io.Reader, fn func(off int64, key uint64)) {
	buf := make([]byte, 4<<20)
	const keep = 10 // an anchor is 2 bytes and its key 8
	var base int64  // offset of buf[0]
	n := 0
	for {
		m, err := io.ReadFull(r, buf[n:])
		n += m
		for i := 0; i+keep <= n; {
			j := bytes.IndexByte(buf[i:n-keep+1], 0)
			if j < 0 {
				break
			}
			i += j
			if buf[i+1] < 16 {
				fn(base+int64(i), binary.LittleEndian.Uint64(buf[i+2:]))
			}
			i++
		}
		if err != nil {
			return
		}
		// Keep the tail that may start an anchor.
		copy(buf, buf[n-keep+1:n])
		base += int64(n - keep + 1)
		n = keep - 1
	}
}

// scan looks at every regular file in dir once.
func (w *plaintextWatch) scan(dir string) {
	es, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range es {
		path := filepath.Join(dir, e.Name())
		if e.Name() == w.finalName {
			if fi, err := os.Stat(path); err == nil && fi.Size() != w.size {
				w.mu.Lock()
				w.partial = append(w.partial, fmt.Sprintf("%s with %d of %d bytes", e.Name(), fi.Size(), w.size))
				w.mu.Unlock()
			}
			continue // complete: the received file itself
		}
		f, err := os.Open(path)
		if err != nil {
			continue
		}
		blocks := map[int64]bool{}
		a, b := make([]byte, watchBlock), make([]byte, watchBlock)
		w.eachAnchor(f, func(off int64, key uint64) {
			s, ok := w.anchors[key]
			if !ok {
				return
			}
			blk := s &^ (watchBlock - 1)
			if blocks[blk] {
				return
			}
			at := off - s + blk // where the block would be in f
			if at < 0 {
				return
			}
			if n, _ := f.ReadAt(a, at); n != watchBlock {
				return
			}
			if n, _ := w.src.ReadAt(b, blk); n == watchBlock && bytes.Equal(a, b) {
				blocks[blk] = true
			}
		})
		f.Close()
		w.mu.Lock()
		w.most[e.Name()] = max(w.most[e.Name()], len(blocks))
		w.mu.Unlock()
	}
	w.mu.Lock()
	w.scans++
	w.mu.Unlock()
}

// run scans dir until ctx ends.
func (w *plaintextWatch) run(ctx context.Context, dir string) {
	for ctx.Err() == nil {
		w.scan(dir)
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// check fails if some file held more than limit bytes of the source's plaintext, or the
// file's own name showed a partial file.
func (w *plaintextWatch) check(t *testing.T, limit int) {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	for name, n := range w.most {
		if n*watchBlock > limit {
			t.Errorf("%s held %d KiB of the file's plaintext (limit: one chunk, %d KiB)", name, n*watchBlock>>10, limit>>10)
		}
	}
	for _, p := range w.partial {
		t.Errorf("partial file under the final name: %s", p)
	}
	t.Logf("plaintext watch: %d scans of the destination, most plaintext per file: %v (in 4 KiB blocks)", w.scans, w.most)
}

// TestReceiveFilesResumesAfterKill: receive-files is killed with SIGKILL about a third
// of the way into a large file and started again in the same consumer group; the file
// completes byte-identical without being sent again. All the while a watcher reads every
// file in the destination directory: none ever holds more than one chunk of the file's
// plaintext, and the file's name never shows a partial file.
func TestReceiveFilesResumesAfterKill(t *testing.T) {
	size := int64(300 << 20)
	if s := os.Getenv("PUBCRYPT_RESUME_TEST_MIB"); s != "" { // to try it smaller by hand
		mib, err := strconv.Atoi(s)
		if err != nil {
			t.Fatal(err)
		}
		size = int64(mib) << 20
	}
	const topic, group, name = "files", "pubcrypt-files", "backup.bin"
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	start := time.Now()
	rig := newFileRig(t, ctx, topic)
	src, dst := t.TempDir(), t.TempDir()
	path := filepath.Join(src, name)
	randomFile(t, path, size, 1)
	watch := newPlaintextWatch(t, path, name)

	wctx, wstop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { watch.run(wctx, dst) })
	defer func() { wstop(); wg.Wait() }()

	// The sender sends a third of the file and waits; the first receiver stores it and
	// is killed once the group has committed a position past chunk 0 (so that the broker
	// will not deliver the header again: the restart must go on from what is on disk).
	// Then the sender sends the rest, once: nothing is sent twice.
	messages := 1 + (size+defaultChunkSize-1)/defaultChunkSize
	third := uint64(messages / 3)
	t1 := time.Now()
	first := rig.receiveCmd(ctx, dst, group, topic)
	var out1 bytes.Buffer
	first.Stdout, first.Stderr = &out1, &out1
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- first.Wait() }()
	release := make(chan struct{})
	type sendResult struct {
		st  filestream.Stats
		err error
	}
	sent := make(chan sendResult, 1)
	go func() {
		st, err := rig.send(ctx, topic, path, defaultChunkSize, third, release)
		sent <- sendResult{st, err}
	}()
	stored := int64(third-1) * defaultChunkSize // data chunks 1 … third-1
	var partialSize, committed int64 = 0, -1
	for partialSize < stored || committed < 1 {
		select {
		case err := <-exited:
			t.Fatalf("first receive-files ended before the kill (partial state %d MiB, committed offset %d): %v\n%s", partialSize>>20, committed, err, out1.String())
		case <-time.After(50 * time.Millisecond):
		}
		if partialSize = largestPartial(dst); partialSize >= stored {
			var err error
			if committed, err = rig.committed(ctx, group, topic); err != nil {
				t.Fatal(err)
			}
		}
	}
	_ = first.Process.Signal(syscall.SIGKILL)
	<-exited
	firstTime := time.Since(t1)
	t.Logf("first receive-files killed with SIGKILL after %v: %d of %d messages sent, partial state at %d MiB of %d, committed offset %d",
		firstTime.Round(time.Millisecond), third, messages, largestPartial(dst)>>20, size>>20, committed)
	close(release)
	res := <-sent
	if res.err != nil {
		t.Fatal(res.err)
	}
	sendTime := time.Since(t1)
	if _, err := os.Stat(filepath.Join(dst, name)); err == nil {
		t.Fatal("the file is in place before the transfer completed")
	}

	// Second run, same group, no re-send: it must finish the file. The idle window
	// outlasts the session timeout (10 s) within which the broker still counts the killed
	// receiver as the partition's owner.
	t2 := time.Now()
	err, stdout, stderr := rig.runReceive(t, ctx, dst, group, topic, "--max-files", "1", "--idle", "45s")
	secondTime := time.Since(t2)
	wstop()
	wg.Wait()
	watch.check(t, defaultChunkSize)
	if err != nil || !strings.Contains(stdout, "1 file(s) received") || strings.Contains(stdout, "refused:") {
		t.Fatalf("second receive-files: %v\nstdout:\n%s\nstderr:\n%s", err, stdout, stderr)
	}
	sameFile(t, path, filepath.Join(dst, name))
	onlyFiles(t, dst, name)
	t.Logf("second receive-files finished the file in %v: %s", secondTime.Round(time.Millisecond), lastLine(stdout))
	t.Logf("%d MiB in %d messages: first run %v (killed), the rest sent by %v, second run %v, whole test %v",
		size>>20, res.st.Messages, firstTime.Round(time.Second), sendTime.Round(time.Second), secondTime.Round(time.Second), time.Since(start).Round(time.Second))
}

// largestPartial is the size of the largest file in dir with the receiver's prefix.
func largestPartial(dir string) int64 {
	es, _ := os.ReadDir(dir)
	var most int64
	for _, e := range es {
		if !strings.HasPrefix(e.Name(), ".pubcrypt-partial-") {
			continue
		}
		if fi, err := e.Info(); err == nil {
			most = max(most, fi.Size())
		}
	}
	return most
}
