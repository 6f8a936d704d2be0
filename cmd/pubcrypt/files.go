package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"runtime/debug"
	"sort"

	"github.com/schollz/progressbar/v3"
	"gocloud.dev/pubsub"
	"golang.org/x/term"

	"github.com/pubcrypt/pubcrypt/internal/broker"
	"github.com/pubcrypt/pubcrypt/internal/filestream"
	"github.com/pubcrypt/pubcrypt/keyring"
)

const defaultChunkSize = 512 << 10 // well inside Kafka's default 1 MiB message limit

// fileMemoryLimit is the soft heap limit of the file commands (peak RSS of receive-files
// on a 200 MiB file: 48 MB with it, 71 MB without, measured before every gocloud driver
// was linked in; 54-56 MB since). Their live heap is a few
// chunks plus the client's read-ahead; without a limit the collector lets the heap grow
// to twice that. GOMEMLIMIT, when set, wins.
const fileMemoryLimit = 32 << 20

func limitMemory() {
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(fileMemoryLimit)
	}
}

func runSendFiles(ctx context.Context, args []string, out io.Writer) error {
	fs := newFlags("send-files", "Encrypts every regular file of a directory locally with a one-use data key from Vault\n"+
		"(one Vault call per file) and streams it to a topic in authenticated chunks: the file\n"+
		"name travels encrypted, and a receiver detects truncation, reordering, duplication and\n"+
		"chunks mixed from two files. Memory use does not grow with the file size.\n\n"+
		"Example: pubcrypt send-files --dir source --topic kafka://purchases_large_encrypted")
	dir := fs.String("dir", "source", "directory whose files are sent (not recursive)")
	topicURL := fs.String("topic", "kafka://purchases_large_encrypted", "topic URL to send to")
	chunk := fs.Int("chunk-size", 0, "plaintext bytes per message (0: 512 KiB, less where the broker's message limit needs it)")
	var vf vaultFlags
	vf.register(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	limitMemory()
	files, err := regularFiles(*dir)
	if err != nil {
		return err
	}
	if *chunk == 0 {
		*chunk = chunkSizeFor(*topicURL)
	}
	kr, err := vf.keyring()
	if err != nil {
		return err
	}
	top, err := broker.OpenTopic(ctx, *topicURL)
	if err != nil {
		return err
	}
	defer shutdown(top)
	stats, err := sendFiles(ctx, kr, top, files, *chunk, os.Stderr)
	for _, s := range stats {
		fmt.Fprintf(out, "sent %s: %d bytes in %d messages (transfer %s)\n", s.name, s.Size, s.Messages, s.TransferID)
	}
	fmt.Fprintf(out, "%d of %d file(s) sent to %s\n", len(stats), len(files), *topicURL)
	return err
}

// chunkSizeFor picks the chunk size for a topic: 512 KiB, or less where the broker's
// message limit (SNS: 256 KiB, base64-encoded) needs it.
func chunkSizeFor(topicURL string) int {
	u, err := url.Parse(topicURL)
	if err != nil {
		return defaultChunkSize
	}
	return broker.LimitsFor(u.Scheme).ChunkSize(defaultChunkSize, filestream.MaxOverhead)
}

type sentFile struct {
	name string
	filestream.Stats
}

// sendFiles sends each file, stopping at the first failure (what was sent before stays).
func sendFiles(ctx context.Context, kr keyring.Keyring, top *pubsub.Topic, files []string, chunk int, progress io.Writer) ([]sentFile, error) {
	send := func(ctx context.Context, body []byte, md map[string]string) error {
		return top.Send(ctx, &pubsub.Message{Body: body, Metadata: md})
	}
	var done []sentFile
	for _, path := range files {
		var bar *progressbar.ProgressBar // made once the size is known: an unknown size
		// starts progressbar's spinner goroutine, which races with updates
		st, err := filestream.SendFile(ctx, kr, path, send, filestream.SendOptions{
			ChunkSize: chunk,
			Progress: func(sent, total int64) {
				if bar == nil {
					bar = newBar(progress, total, "send "+filepath.Base(path))
				}
				if bar != nil {
					_ = bar.Set64(sent)
				}
			},
		})
		if bar != nil {
			_ = bar.Finish()
		}
		if err != nil {
			return done, fmt.Errorf("send %s: %w", path, err)
		}
		done = append(done, sentFile{name: filepath.Base(path), Stats: st})
	}
	return done, nil
}

func runReceiveFiles(ctx context.Context, args []string, out io.Writer) error {
	fs := newFlags("receive-files", "Receives files sent by send-files, decrypts and verifies them, and moves each into the\n"+
		"destination directory only when the whole file verified; a partial or tampered\n"+
		"transfer never appears there. Each message is acknowledged once its chunk is verified\n"+
		"and written to the partial file, which keeps memory flat; a receiver restarted in the\n"+
		"middle of a file cannot finish that file (it says so) and the file must be sent again.\n\n"+
		"Example: pubcrypt receive-files --sub 'kafka://pubcrypt-files?topic=purchases_large_encrypted&offset=oldest' --dir destination")
	subURL := fs.String("sub", "kafka://pubcrypt-files?topic=purchases_large_encrypted&offset=oldest", "subscription URL to read")
	dir := fs.String("dir", "destination", "directory the received files are written to")
	maxFiles := fs.Int("max-files", 0, "stop after this many files completed or refused (0: no limit)")
	overwrite := fs.Bool("overwrite", false, "replace an existing file of the same name")
	ordered := fs.String("ordered", "auto", "chunks must arrive in order: true (a reordered chunk is refused), false (reassembled in any order, for Pub/Sub, SQS), auto (true on Kafka, NATS, RabbitMQ)")
	var vf vaultFlags
	vf.register(fs)
	var sf stopFlags
	sf.register(fs, 0, 0)
	if err := fs.Parse(args); err != nil {
		return err
	}
	limitMemory()
	strict, err := orderedFor(*ordered, *subURL)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(*dir, 0o755); err != nil {
		return err
	}
	kr, err := vf.keyring()
	if err != nil {
		return err
	}
	sub, err := broker.OpenSubscription(ctx, *subURL)
	if err != nil {
		return err
	}
	defer shutdown(sub)
	got, failed, err := receiveFiles(ctx, kr, sub, *dir, receiveLimits{files: *maxFiles, stop: sf, overwrite: *overwrite, unordered: !strict}, out, os.Stderr)
	fmt.Fprintf(out, "%d file(s) received into %s, %d refused\n", got, *dir, failed)
	if err == nil && failed > 0 {
		err = fmt.Errorf("%d transfer(s) refused; nothing of them was written to %s", failed, *dir)
	}
	return err
}

type receiveLimits struct {
	files     int
	stop      stopFlags
	overwrite bool
	unordered bool // reassemble chunks in any order (brokers that do not keep order)
}

// orderedFor decides whether chunks must arrive in order: brokers that keep order per
// partition or queue make a reordered chunk a sign of tampering; on the others order
// carries no meaning and the receiver reassembles (integrity is checked either way).
func orderedFor(flag, subURL string) (bool, error) {
	switch flag {
	case "true":
		return true, nil
	case "false":
		return false, nil
	case "auto":
		u, err := url.Parse(subURL)
		if err != nil {
			return false, fmt.Errorf("--sub: %w", err)
		}
		switch u.Scheme {
		case "kafka", "nats", "rabbit":
			return true, nil
		}
		return false, nil
	}
	return false, fmt.Errorf("--ordered must be true, false or auto, not %q", flag)
}

// receiveFiles feeds messages to a filestream.Receiver. Each message is acked as soon as
// Handle has dealt with it: kafkapubsub keeps every message behind an unacked one in
// memory, so holding a transfer's chunks until it completes would hold the whole file.
// A key-service outage stops without acking, so the chunk is read again.
func receiveFiles(ctx context.Context, kr keyring.Keyring, sub *pubsub.Subscription, dir string, lim receiveLimits, out, progress io.Writer) (got, failed int, err error) {
	var rcv *filestream.Receiver
	defer func() {
		if rcv == nil {
			return
		}
		// Transfers still open when the receiver stops are truncated: report each (their
		// partial files are removed; nothing appears in dir).
		for _, e := range unjoin(rcv.Close()) {
			if errors.Is(e, filestream.ErrIncomplete) {
				failed++
				fmt.Fprintf(out, "refused: %v\n", e)
			}
		}
	}()
	bars := map[string]*progressbar.ProgressBar{}
	rcv, err = filestream.NewReceiver(kr, dir, filestream.ReceiveOptions{
		Overwrite: lim.overwrite,
		Unordered: lim.unordered,
		Progress: func(name string, n, total int64) {
			bar, ok := bars[name]
			if !ok {
				bar = newBar(progress, total, "recv "+name)
				bars[name] = bar
			}
			if bar != nil {
				_ = bar.Set64(n)
			}
		},
	})
	if err != nil {
		return 0, 0, err
	}
	refused := map[string]bool{} // transfers refused, each counted once
	for lim.files == 0 || got+failed < lim.files {
		m, err := lim.stop.receive(ctx, sub.Receive)
		if errors.Is(err, errIdle) || (err != nil && ctx.Err() != nil) {
			return got, failed, nil
		}
		if err != nil {
			return got, failed, err
		}
		done, herr := rcv.Handle(ctx, m.Body, m.Metadata)
		if herr != nil && errors.Is(herr, keyring.ErrUnavailable) {
			return got, failed, herr // not acked: read again by the next run
		}
		m.Ack()
		switch {
		case done != nil:
			got++
			if bar := bars[done.Name]; bar != nil {
				_ = bar.Finish()
				delete(bars, done.Name)
			}
			fmt.Fprintf(out, "received %s: %d bytes, verified (transfer %s)\n", done.Path, done.Size, done.TransferID)
		case errors.Is(herr, filestream.ErrAlreadyReceived):
			// Redelivery of a file already in place: nothing to do.
		case herr != nil:
			var te *filestream.TransferError
			id := ""
			if errors.As(herr, &te) {
				id = te.ID
			}
			if id == "" || !refused[id] {
				refused[id] = id != ""
				failed++
				fmt.Fprintf(out, "refused: %v\n", herr)
			}
		}
	}
	return got, failed, nil
}

// unjoin splits an errors.Join result into its errors.
func unjoin(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// regularFiles lists the regular files of dir, sorted, with a clear error if there are none.
func regularFiles(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read source directory: %w", err)
	}
	var files []string
	for _, e := range entries {
		if e.Type().IsRegular() {
			files = append(files, filepath.Join(dir, e.Name()))
		}
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("no regular files in %s", dir)
	}
	sort.Strings(files)
	return files, nil
}

// newBar returns a progress bar of max bytes on w, or nil when w is not a terminal (no
// bar at all: logs and pipes get one line per file instead).
func newBar(w io.Writer, max int64, desc string) *progressbar.ProgressBar {
	if f, ok := w.(*os.File); !ok || !term.IsTerminal(int(f.Fd())) {
		return nil
	}
	return progressbar.NewOptions64(max,
		progressbar.OptionSetWriter(w),
		progressbar.OptionSetDescription(desc),
		progressbar.OptionShowBytes(true),
		progressbar.OptionSetWidth(30),
		progressbar.OptionThrottle(100_000_000),
		progressbar.OptionShowCount(),
		progressbar.OptionClearOnFinish(),
	)
}
