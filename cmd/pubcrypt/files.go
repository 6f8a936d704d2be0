package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"runtime/debug"
	"sort"
	"time"

	"github.com/schollz/progressbar/v3"
	"gocloud.dev/pubsub"
	"golang.org/x/term"

	"github.com/pubcrypt/pubcrypt/fault"
	"github.com/pubcrypt/pubcrypt/internal/broker"
	"github.com/pubcrypt/pubcrypt/internal/filestream"
	"github.com/pubcrypt/pubcrypt/keyring"
)

const defaultChunkSize = 512 << 10 // well inside Kafka's default 1 MiB message limit

// fileMemoryLimit is the soft heap limit of the file commands (peak RSS of receive-files
// on a 200 MiB file: 48 MB with it, 71 MB without, measured before every gocloud driver
// was linked in; 54-56 MB since; 55-57 MB with the resumable receiver and
// fileReadAhead). Their live heap is a few chunks plus the client's read-ahead; without a
// limit the collector lets the heap grow to twice that. GOMEMLIMIT, when set, wins.
const fileMemoryLimit = 32 << 20

// fileReadAhead is how many chunks receive-files lets the Kafka client fetch ahead of it
// (broker.Options.ReadAhead). Each chunk is made durable before it is acknowledged, so
// the client is faster than the receiver and fills whatever it is given: with sarama's
// 256 (128 MiB of chunks) peak RSS on a 200 MiB file was 68-168 MB; with 4 to 16, 55-57 MB,
// and no slower.
const fileReadAhead = 8

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
		"Example: pubcrypt send-files --dir source --topic kgo://purchases_large_encrypted")
	dir := fs.String("dir", "source", "directory whose files are sent (not recursive)")
	topicURL := fs.String("topic", "kgo://purchases_large_encrypted", "topic URL to send to")
	chunk := countFlag(fs, new(int), "chunk-size", 0, "plaintext bytes per message (0: 512 KiB, less where the broker's message limit needs it)")
	var vf vaultFlags
	vf.register(fs)
	if err := parseFlags(fs, args); err != nil {
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
	defer closeKeyring(kr)
	if err := checkKeys(ctx, kr, vf.keysFor(nil)); err != nil {
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
		"transfer never appears there. Each chunk is verified and stored, still encrypted, in the\n"+
		"transfer's partial state in the directory before its message is acknowledged, so a\n"+
		"receiver restarted in the middle of a file finishes it without a re-send. If the\n"+
		"directory cannot be written (read-only, full), nothing is acknowledged: the command\n"+
		"stops with an environment fault, and a rerun goes on where it stopped.\n\n"+
		"Example: pubcrypt receive-files --sub 'kgo://pubcrypt-files?topic=purchases_large_encrypted&offset=oldest' --dir destination")
	subURL := fs.String("sub", "kgo://pubcrypt-files?topic=purchases_large_encrypted&offset=oldest", "subscription URL to read")
	dir := fs.String("dir", "destination", "directory the received files are written to")
	maxFiles := countFlag(fs, new(int), "max-files", 0, "stop after this many files completed or refused (0: no limit)")
	overwrite := fs.Bool("overwrite", false, "replace an existing file of the same name")
	ordered := fs.String("ordered", "auto", "chunks must arrive in order: true (a chunk after a gap is refused), false (reassembled in any order, for Pub/Sub, SQS), auto (true on Kafka, NATS, RabbitMQ)")
	staleAfter := durationFlag(fs, new(time.Duration), "stale-after", filestream.DefaultStaleAfter, "remove at start the partial state of transfers that got no chunk for this long (0: keep it)")
	var vf vaultFlags
	vf.register(fs)
	var bf brokerFlags
	bf.register(fs)
	var ff faultFlags
	ff.register(fs, "a chunk refused for a fault of its own (tampered with, foreign, out of order; its transfer is refused)", onFaultSkip)
	var sf stopFlags
	sf.register(fs, 0, 0)
	var of obsFlags
	of.register(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	obs, err := of.start("receive-files")
	if err != nil {
		return err
	}
	defer obs.close()
	limitMemory()
	strict, err := orderedFor(*ordered, *subURL)
	if err != nil {
		return usagef("%w", err)
	}
	onFault, err := ff.policy()
	if err != nil {
		return err
	}
	bopts, err := bf.options()
	if err != nil {
		return err
	}
	subOpts := bopts
	subOpts.ReadAhead = fileReadAhead
	if err := os.MkdirAll(*dir, 0o755); err != nil {
		return envFault(fmt.Errorf("destination: %w", err))
	}
	kr, err := vf.keyring()
	if err != nil {
		return err
	}
	defer closeKeyring(kr)
	if onFault == onFaultDeadLetter { // dead letters are encrypted under the --vault-key
		if err := checkKeys(ctx, kr, vf.keysFor(nil)); err != nil {
			return err
		}
	}
	stale := *staleAfter
	if stale == 0 {
		stale = -1 // keep
	}
	rlim := receiveLimits{overwrite: *overwrite, unordered: !strict, staleAfter: stale}
	// The destination is checked before the broker is touched: an unwritable directory
	// is one clear line at start, with nothing read, nothing acknowledged.
	rcv, err := newFileReceiver(kr, *dir, rlim, os.Stderr)
	if err != nil {
		return envFault(err)
	}
	var dl *deadLetter
	if onFault == onFaultDeadLetter {
		if dl, err = openDeadLetter(ctx, ff.deadLetter, kr, bopts, *subURL, "pubcrypt receive-files"); err != nil {
			rcv.Close()
			return err
		}
		defer shutdown(dl.topic)
	}
	sub, err := broker.OpenSubscriptionWith(ctx, *subURL, subOpts)
	if err != nil {
		rcv.Close()
		return err
	}

	// An outage of Vault or of the broker is ridden out: the receiver and the
	// subscription are closed — the chunk at fault unacknowledged, the transfer's state
	// kept — and opened again after a backoff, so the chunk comes again and the transfer
	// goes on, as after a restart. A destination that cannot be written stops the command.
	o := outage{max: ff.maxOutage, health: obs.health}
	obs.started()
	handled := 0
	lim := receiveLimits{files: *maxFiles, stop: sf,
		onAck: func() { handled++; o.over() },
		onFault: func(ctx context.Context, m *pubsub.Message, herr error) error {
			return fileMessageFault(ctx, onFault, dl, m, herr)
		}}
	var got, failed int
	for {
		g, f, rerr := receiveWith(ctx, rcv, sub, lim, out)
		got, failed, err = got+g, failed+f, rerr
		_ = shutdown(sub)
		if err == nil || interrupted(ctx, err) || !outageOfServices(err) {
			break
		}
		if lim.files > 0 {
			lim.files = max(1, *maxFiles-(got+failed))
		}
		if sf.max > 0 {
			lim.stop.max = max(1, sf.max-handled)
		}
		var se *subscriptionError
		brokerOutage := errors.As(err, &se)
		rcv, sub = nil, nil
		for rcv == nil || sub == nil {
			if werr := o.wait(ctx, "receive-files from "+redactURL(*subURL), err); werr != nil {
				err = stopped(ctx, werr)
				break
			}
			if rcv == nil {
				if rcv, err = newFileReceiver(kr, *dir, rlim, os.Stderr); err != nil {
					rcv = nil
					continue
				}
			}
			if sub, err = broker.OpenSubscriptionWith(ctx, *subURL, subOpts); err != nil {
				sub = nil
			}
		}
		if rcv == nil || sub == nil {
			if rcv != nil {
				rcv.Close()
			}
			break
		}
		if brokerOutage {
			o.over() // the broker answers again (a Vault outage ends with the next chunk stored)
		}
	}
	fmt.Fprintf(out, "%d file(s) received into %s, %d refused\n", got, *dir, failed)
	if err == nil && failed > 0 {
		err = fmt.Errorf("%d transfer(s) refused; nothing of them was written to %s", failed, *dir)
	}
	return err
}

// fileMessageFault applies --on-message-fault to a chunk refused for a fault of its own.
// It returns nil when the message may be acknowledged.
func fileMessageFault(ctx context.Context, policy string, dl *deadLetter, m *pubsub.Message, herr error) error {
	pos := broker.Position(m)
	switch policy {
	case onFaultStop:
		return fmt.Errorf("stopped without acknowledging message %s (%s; --on-message-fault=skip or dead-letter go on): %w", broker.Position(m), pos, herr)
	case onFaultDeadLetter:
		reason := withoutFileName(herr)
		if err := dl.send(ctx, m, reason); err != nil {
			return err
		}
		slog.Warn("message fault: dead-lettered", "id", broker.Position(m), "source", pos, "to", dl.url, "err", reason.Error())
	}
	return nil
}

// withoutFileName is a refused chunk's error as a dead letter may carry it: the file's
// name travels encrypted, but a dead letter's reason is clear metadata on a topic, and
// the text of a *filestream.TransferError names the file (as does ErrUnsafeName's
// detail, quoting the name it refused). The class and the transfer ID stay.
func withoutFileName(herr error) error {
	te, ok := herr.(*filestream.TransferError)
	if !ok {
		return herr
	}
	c := *te
	c.Name = ""
	if errors.Is(c.Err, filestream.ErrUnsafeName) {
		c.Err = filestream.ErrUnsafeName
	}
	return &c
}

// envFault says of an error of the environment that it is one, and that nothing was
// acknowledged because of it: the user mends the environment and runs the command
// again, which goes on where it stopped.
func envFault(err error) error {
	if err == nil || fault.ClassOf(err) != fault.Environment {
		return err
	}
	return &classNamed{fmt.Errorf("environment fault, message not acknowledged (run again once it is fixed: the transfer resumes): %w", err)}
}

type receiveLimits struct {
	files      int
	stop       stopFlags
	overwrite  bool
	unordered  bool          // reassemble chunks in any order (brokers that do not keep order)
	staleAfter time.Duration // filestream.ReceiveOptions.StaleAfter
	onAck      func()        // a message was acknowledged (nil: nothing)
	// onFault is asked, before a message refused for a fault of its own is
	// acknowledged, what to do: nil acknowledges it, an error stops without (nil: ack).
	onFault func(ctx context.Context, m *pubsub.Message, herr error) error
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
		return broker.CapabilitiesFor(u.Scheme).KeepsOrder, nil
	}
	return false, fmt.Errorf("--ordered must be true, false or auto, not %q", flag)
}

// receiveFiles feeds messages to a filestream.Receiver on dir.
func receiveFiles(ctx context.Context, kr keyring.Keyring, sub *pubsub.Subscription, dir string, lim receiveLimits, out, progress io.Writer) (got, failed int, err error) {
	rcv, err := newFileReceiver(kr, dir, lim, progress)
	if err != nil {
		return 0, 0, envFault(err)
	}
	return receiveWith(ctx, rcv, sub, lim, out)
}

// fileReceiver is a filestream.Receiver with the progress bars of its transfers.
type fileReceiver struct {
	*filestream.Receiver
	bars map[string]*progressbar.ProgressBar
}

func newFileReceiver(kr keyring.Keyring, dir string, lim receiveLimits, progress io.Writer) (*fileReceiver, error) {
	fr := &fileReceiver{bars: map[string]*progressbar.ProgressBar{}}
	rcv, err := filestream.NewReceiver(kr, dir, filestream.ReceiveOptions{
		Logger:     slog.Default(),
		Overwrite:  lim.overwrite,
		Unordered:  lim.unordered,
		StaleAfter: lim.staleAfter,
		Progress: func(name string, n, total int64) {
			bar, ok := fr.bars[name]
			if !ok {
				bar = newBar(progress, total, "recv "+name)
				fr.bars[name] = bar
			}
			if bar != nil {
				_ = bar.Set64(n)
			}
		},
	})
	if err != nil {
		return nil, err
	}
	fr.Receiver = rcv
	return fr, nil
}

// receiveWith feeds messages to rcv, and closes it. A message is acknowledged once
// Handle has dealt with it for good: its chunk stored durably in the transfer's partial
// state (kafkapubsub keeps every message behind an unacknowledged one in memory, so
// holding a transfer's chunks until it completes would hold the whole file), ignored as
// a redelivery, or refused as a fault of the message. An environment fault (the
// directory unwritable or full, the key service unavailable) is never acknowledged: the
// command stops with it, and the next run reads the chunk again and goes on.
func receiveWith(ctx context.Context, rcv *fileReceiver, sub *pubsub.Subscription, lim receiveLimits, out io.Writer) (got, failed int, err error) {
	defer func() {
		// Transfers still open when the receiver stops are kept, encrypted, for the
		// next run: say so.
		for _, p := range rcv.Partials() {
			name := ""
			if p.Name != "" {
				name = fmt.Sprintf(" (%q)", p.Name)
			}
			total := "?"
			if p.Total > 0 {
				total = fmt.Sprint(p.Total)
			}
			fmt.Fprintf(out, "in progress: transfer %s%s, %d of %s chunks kept for the next run\n", p.TransferID, name, p.Chunks, total)
		}
		rcv.Close()
	}()
	refused := map[string]bool{} // transfers refused, each counted once
	report := func(done *filestream.Done, herr error, how string) {
		switch {
		case done != nil:
			got++
			if bar := rcv.bars[done.Name]; bar != nil {
				_ = bar.Finish()
				delete(rcv.bars, done.Name)
			}
			fmt.Fprintf(out, "received %s: %d bytes, verified (transfer %s%s)\n", done.Path, done.Size, done.TransferID, how)
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
	// Transfers whose chunks all arrived before an earlier run stopped: install them.
	done, rerr := rcv.Resume(ctx)
	for _, d := range done {
		report(d, nil, ", resumed")
	}
	for _, e := range unjoin(rerr) {
		if fault.ClassOf(e) == fault.Environment {
			return got, failed, envFault(e)
		}
		report(nil, e, "")
	}
	for n := 0; lim.files == 0 || got+failed < lim.files; {
		if lim.stop.done(n) {
			break
		}
		m, err := lim.stop.receive(ctx, sub.Receive)
		if errors.Is(err, errIdle) || (err != nil && ctx.Err() != nil) {
			return got, failed, nil
		}
		if err != nil {
			return got, failed, &subscriptionError{err}
		}
		n++
		done, herr := rcv.Handle(ctx, m.Body, m.Metadata)
		if herr != nil && fault.ClassOf(herr) == fault.Environment {
			if m.Nackable() {
				m.Nack() // redelivered, where the broker can
			}
			if ctx.Err() != nil {
				return got, failed, nil // interrupted: the chunk is read again next time
			}
			return got, failed, envFault(herr) // not acknowledged: read again by the next run
		}
		if herr != nil && lim.onFault != nil && !errors.Is(herr, filestream.ErrAlreadyReceived) {
			if err := lim.onFault(ctx, m, herr); err != nil {
				return got, failed, err // not acknowledged
			}
		}
		m.Ack()
		if lim.onAck != nil {
			lim.onAck()
		}
		report(done, herr, "")
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
