package filestream

import (
	"bytes"
	"context"
	"crypto/cipher"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/pubcrypt/pubcrypt/fault"
	"github.com/pubcrypt/pubcrypt/internal/wire"
	"github.com/pubcrypt/pubcrypt/keyring"
)

// ReceiveOptions configure a Receiver. The zero value is useful.
type ReceiveOptions struct {
	// Logger receives one line per finished or failed transfer and per piece of partial
	// state found or removed at start (transfer ID and reason, never the file name); nil
	// discards them.
	Logger *slog.Logger
	// Progress, if set, is called after each chunk stored once the file name is known,
	// with the file name, the bytes received so far and the file size. It runs while the
	// Receiver is locked: it must not call the Receiver.
	Progress func(name string, got, total int64)
	// MaxOpenTransfers bounds the transfers whose state is held in memory at once; 0
	// means 64. When a new transfer would exceed it, the one that has waited longest for
	// its next chunk is set aside: its partial state stays in the destination directory
	// and is read again when its next chunk arrives.
	MaxOpenTransfers int
	// Overwrite lets a received file replace an existing file of the same name. Without
	// it, such a transfer fails with ErrExists and the existing file is left alone.
	Overwrite bool
	// Preserve applies the sender's permission bits and modification time to the received
	// file. Without it, a received file has mode 0600 and the time it was written.
	Preserve bool
	// Unordered accepts the chunks of a transfer in any order, for brokers that do not
	// keep order (Google Pub/Sub, SQS standard queues); the file is installed once chunk 0
	// and every data chunk have arrived (docs/FILES.md, section 10.2). Without it, the
	// chunks of a transfer must arrive in order: a chunk after a gap aborts the transfer
	// with ErrOrder. Either way every chunk is authenticated on arrival, and a chunk
	// already received (a redelivery) is ignored.
	Unordered bool
	// StaleAfter is how long partial state may go without a new chunk before NewReceiver
	// removes it (docs/FILES.md, section 11.2); 0 means 7 days, a negative value keeps it
	// until Expire.
	StaleAfter time.Duration
}

// DefaultStaleAfter is ReceiveOptions.StaleAfter when it is 0.
const DefaultStaleAfter = 7 * 24 * time.Hour

// Done describes a file that was received completely and installed under its name.
type Done struct {
	// TransferID is the transfer's ID, as in the chunk metadata and the sender's Stats.
	TransferID string
	// Name is the file's name in the destination directory.
	Name string
	// Path is the destination directory joined with Name.
	Path string
	// Size is the file size in bytes.
	Size int64
	// Mode is the sender's permission bits, 0 if it sent none.
	Mode fs.FileMode
	// ModTime is the sender's modification time, zero if it sent none.
	ModTime time.Time
	// Chunks is the number of messages of the transfer, the header chunk included.
	Chunks int64
}

// Partial is a transfer in progress, whose partial state is kept in the destination
// directory until it completes.
type Partial struct {
	// TransferID is the transfer's ID.
	TransferID string
	// Name is the file name, once this Receiver has read chunk 0; empty otherwise.
	Name string
	// Chunks is the number of the transfer's messages stored, Total the number it has
	// (0 while neither chunk 0 nor the final chunk has arrived).
	Chunks, Total int64
	// Bytes is the size of the partial state on disk.
	Bytes int64
}

// Receiver reassembles files from chunk messages into a destination directory. Chunks of
// several transfers may interleave; the chunks of one transfer must be passed in the
// order they were sent, unless ReceiveOptions.Unordered is set. It is safe for
// concurrent use; calls are serialized except while a data key is being unwrapped.
//
// Each chunk is authenticated, then stored as it came (ciphertext) in the transfer's
// partial state in the destination directory, and made durable before Handle returns;
// the file is decrypted into place only when every chunk is there. A Receiver started on
// the same directory after a crash or a restart goes on with the transfers in progress
// (docs/FILES.md, section 11).
type Receiver struct {
	kr      keyring.Keyring
	dir     string
	root    *os.Root
	dirf    *os.File // the same directory: its lock, unnamed files, fsync
	unnamed bool     // files are assembled in unnamed files (O_TMPFILE)
	opts    ReceiveOptions
	log     *slog.Logger
	now     func() time.Time

	mu           sync.Mutex
	closed       bool
	open         map[transferID]*transfer     // state in memory
	disk         map[transferID]*spoolSummary // partial state on disk only
	ended        map[transferID]ending
	order        []endedRef // ring of ended transfers, oldest first, to bound ended
	seq          uint64
	journalLines int
	buf          []byte // plaintext of the chunk being handled
	ad           []byte // its associated data
	rec          []byte // a record header
}

// maxEnded is how many finished transfers a Receiver remembers, to ignore redelivered
// chunks of completed transfers and to report chunks of aborted ones as such.
const maxEnded = 4096

type ending struct {
	seq       uint64
	completed bool
	name      string
	reason    error // why it was aborted
}

type endedRef struct {
	id  transferID
	seq uint64
}

// transfer is one file being received.
type transfer struct {
	id           transferID
	kid, wrapped string
	aead         cipher.AEAD
	last         time.Time

	// started: chunk 0 was stored, so hdr and chunks are set. With Unordered, data
	// chunks may come first.
	started bool
	hdr     fileHeader
	chunks  uint64 // data chunks of the file

	seen  chunkSet // data chunks stored
	next  uint64   // the smallest data chunk index not stored
	got   uint64   // plaintext bytes stored
	early []record // data chunks stored before chunk 0, checked against it when it comes
	final uint64   // index of the final chunk, once stored (0: not yet)

	end   int64 // size of the spool; 0: no spool yet
	stale bool  // a write to the spool failed: read it again before going on
}

// NewReceiver returns a Receiver that unwraps data keys with kr and writes files into
// destDir, an existing directory it locks for itself (Linux).
//
// It checks at once that destDir can be written (a clear ErrStorage error otherwise),
// and looks at the partial state there (docs/FILES.md, section 11.2): transfers in
// progress are kept for their next chunks (Partials lists them; Resume finishes those
// whose chunks have all arrived), partial state older than ReceiveOptions.StaleAfter is
// removed, and so is any other file with the prefix ".pubcrypt-partial-" (left by an
// older receiver, or being assembled when a receiver stopped), each with a log line.
func NewReceiver(kr keyring.Keyring, destDir string, opts ReceiveOptions) (*Receiver, error) {
	if kr == nil {
		return nil, invalid("no keyring")
	}
	if opts.MaxOpenTransfers <= 0 {
		opts.MaxOpenTransfers = 64
	}
	if opts.StaleAfter == 0 {
		opts.StaleAfter = DefaultStaleAfter
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	dirf, err := os.Open(destDir)
	if err != nil {
		return nil, storage("destination", err)
	}
	root, err := os.OpenRoot(destDir)
	if err != nil {
		dirf.Close()
		return nil, storage("destination", err)
	}
	r := &Receiver{
		kr: kr, dir: destDir, root: root, dirf: dirf, opts: opts, log: log, now: time.Now,
		open: make(map[transferID]*transfer), disk: make(map[transferID]*spoolSummary),
		ended: make(map[transferID]ending),
	}
	if err := r.start(); err != nil {
		root.Close()
		dirf.Close()
		return nil, err
	}
	return r, nil
}

// start checks and locks the directory, and reads what earlier receivers left in it.
func (r *Receiver) start() error {
	fi, err := r.dirf.Stat()
	if err != nil {
		return storage("destination", err)
	}
	if rfi, err := r.root.Stat("."); err != nil || !os.SameFile(fi, rfi) {
		return storage("destination", fmt.Errorf("%s changed while it was opened", r.dir))
	}
	if err := lockDir(r.dirf); err != nil {
		return storage("lock destination "+r.dir, err)
	}
	if err := r.probe(); err != nil {
		return storage(fmt.Sprintf("destination %s is not writable", r.dir), err)
	}
	if err := r.loadJournal(); err != nil {
		return err
	}
	return r.scan()
}

// probe checks that the directory can be written, and whether files can be assembled
// in unnamed files there: the way to never have a partial plaintext file under a name.
func (r *Receiver) probe() error {
	const name = partialPrefix + probeSuffix
	if err := r.root.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	f, err := openUnnamed(r.dirf)
	if err == nil {
		err = linkUnnamed(f, r.dirf, name)
		f.Close()
		switch {
		case err == nil:
			r.unnamed = true
			return r.root.Remove(name)
		case isNotWritable(err):
			return err
		}
		r.log.Warn("filestream: cannot name unnamed files here; files are assembled in named 0600 temporary files", "dir", r.dir, "error", err)
	} else if !errors.Is(err, errNoUnnamed) {
		return err
	} else {
		r.log.Warn("filestream: no unnamed files (O_TMPFILE) here; files are assembled in named 0600 temporary files", "dir", r.dir)
	}
	f, err = r.root.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	f.Close()
	return r.root.Remove(name)
}

func isNotWritable(err error) bool {
	return errors.Is(err, fs.ErrPermission) || errors.Is(err, syscall.EROFS) || errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}

// scan reads the names with the reserved prefix in the directory.
func (r *Receiver) scan() error {
	d, err := r.root.Open(".")
	if err != nil {
		return storage("read destination", err)
	}
	entries, err := d.ReadDir(-1)
	d.Close()
	if err != nil {
		return storage("read destination", err)
	}
	for _, e := range entries {
		name := e.Name()
		rest, ok := strings.CutPrefix(name, partialPrefix)
		if !ok || !e.Type().IsRegular() || rest == journalSuffix {
			continue
		}
		var id transferID
		if len(rest) == idTextLen && decodeID(&id, rest) {
			if err := r.scanSpool(id, e); err != nil {
				return err
			}
			continue
		}
		// Nothing else with the prefix can be resumed, and some hold plaintext: the
		// partial files of receivers before resuming (named at random), a file being
		// assembled where unnamed files are missing, the probe, a journal being rewritten.
		reason := "partial plaintext file of an older receiver; cannot be resumed"
		if strings.HasSuffix(rest, tmpSuffix) {
			reason = "file being assembled when a receiver stopped; its partial state has the chunks"
		}
		if err := r.root.Remove(name); err != nil {
			return storage("remove "+name, err)
		}
		r.log.Warn("filestream: removed a partial file", "file", name, "reason", reason)
	}
	return nil
}

// scanSpool looks at the spool of transfer id found at start.
func (r *Receiver) scanSpool(id transferID, e fs.DirEntry) error {
	name := spoolName(id)
	info, err := e.Info()
	if err != nil {
		return storage("stat "+name, err)
	}
	f, err := r.root.Open(name)
	if err != nil {
		return storage("open "+name, err)
	}
	sum, err := summarize(f, info.Size())
	f.Close()
	if err != nil && !errors.Is(err, errBadSpool) {
		return storage("read "+name, err)
	}
	sum.modified = info.ModTime()
	reason := ""
	switch age := r.now().Sub(info.ModTime()); {
	case err != nil || sum.pre.id != id:
		reason = "not a partial state file (torn when it was created: nothing of it was acknowledged)"
	case sum.records == 0:
		reason = "no chunk stored (nothing of it was acknowledged)"
	case r.isCompleted(id):
		reason = "the transfer was completed"
	case r.opts.StaleAfter > 0 && age > r.opts.StaleAfter:
		reason = fmt.Sprintf("stale: no chunk for %v (StaleAfter %v)", age.Round(time.Second), r.opts.StaleAfter)
	}
	if reason != "" {
		if err := r.root.Remove(name); err != nil {
			return storage("remove "+name, err)
		}
		r.log.Warn("filestream: removed partial state", "transfer", id.String(), "reason", reason)
		return nil
	}
	r.disk[id] = &sum
	r.log.Info("filestream: partial state kept for resuming", "transfer", id.String(), "chunks", sum.records, "complete", sum.complete)
	return nil
}

func (r *Receiver) isCompleted(id transferID) bool {
	e, ok := r.ended[id]
	return ok && e.completed
}

// Handle processes one received message. It returns a *Done when the message completed a
// file, which is then in the destination directory under its name, and nil, nil while a
// transfer is in progress or when the chunk was already received.
//
// When Handle returns nil or an error of class fault.Message, the chunk was dealt with
// for good (stored durably, ignored, or refused) and the message may be acknowledged.
// An error of class fault.Environment (ErrStorage, a key service outage, ErrClosed, a
// cancelled ctx) leaves the transfer as it was: do not acknowledge the message; handing
// the same chunk in again later, in this process or in a Receiver started on the same
// directory, goes on where the transfer was.
//
// Errors are *TransferError values naming the transfer. A redelivered chunk of a transfer
// already completed is reported as ErrAlreadyReceived, which is not a failure. A chunk
// that fails (malformed, tampered with, foreign, out of order) aborts its transfer: its
// partial state is removed, and later chunks of the transfer fail with ErrAborted until
// its chunk 0 arrives again, which starts it over.
//
// With ReceiveOptions.Unordered, chunks of a transfer may come in any order; the *Done
// comes with whichever chunk completes the file, chunk 0 included.
func (r *Receiver) Handle(ctx context.Context, body []byte, md map[string]string) (*Done, error) {
	ref, wrapped, idOK, err := parseMessage(md)
	if err != nil {
		if !idOK {
			return nil, &TransferError{Index: -1, Err: err}
		}
		index := int64(-1)
		if errors.Is(err, errReservedKey) || errors.Is(err, errDEK) { // the reference parsed
			index = int64(ref.index)
		}
		r.mu.Lock()
		defer r.mu.Unlock()
		return nil, r.fail(ref.id, index, err)
	}
	if err := ctx.Err(); err != nil {
		return nil, &TransferError{ID: ref.id.String(), Index: int64(ref.index), Err: err}
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.usable(ref.id, int64(ref.index)); err != nil {
		return nil, err
	}
	t, err := r.lookup(ctx, ref.id, ref.kid, wrapped, int64(ref.index))
	if err != nil {
		return nil, err
	}
	if t == nil {
		// No state anywhere: a new transfer. In order, only chunk 0 may start one.
		if ref.index > 0 && (!r.opts.Unordered || r.isAborted(ref.id)) {
			return nil, r.notOpen(ref)
		}
		aead, err := r.unwrap(ctx, ref.kid, wrapped)
		if err != nil {
			return nil, &TransferError{ID: ref.id.String(), Index: int64(ref.index), Err: err}
		}
		if err := r.usable(ref.id, int64(ref.index)); err != nil {
			return nil, err
		}
		if t = r.open[ref.id]; t == nil { // another call may have started it meanwhile
			if ref.index > 0 && r.isAborted(ref.id) {
				return nil, r.notOpen(ref)
			}
			t = &transfer{id: ref.id, kid: ref.kid, wrapped: wrapped, aead: aead, next: 1}
		}
	}
	t.last = r.now()
	if ref.kid != t.kid || wrapped != t.wrapped {
		return nil, r.abort(t, int64(ref.index), fmt.Errorf("%w: data key differs from the transfer's", ErrAuth))
	}
	maxPlain := uint64(MaxChunkSize)
	switch {
	case ref.index == 0:
		maxPlain = headerLen
	case t.started:
		maxPlain = uint64(t.hdr.chunkSize)
	}
	if len(body) < wire.TagSize || uint64(len(body)-wire.TagSize) > maxPlain {
		return nil, r.abort(t, int64(ref.index), malformed("body of %d bytes, want %d to %d", len(body), wire.TagSize, maxPlain+wire.TagSize))
	}
	if cap(r.buf) < len(body) {
		r.buf = make([]byte, len(body))
	}
	pt, err := r.openChunk(t, ref.index, ref.final, r.buf[:0], body)
	if err != nil {
		return nil, r.abort(t, int64(ref.index), err)
	}
	if ref.index == 0 {
		return r.header(ctx, t, ref, pt, body)
	}
	return r.data(ctx, t, ref, pt, body)
}

// usable reports why a chunk of transfer id cannot be handled now: the Receiver is
// closed, or the transfer was completed.
func (r *Receiver) usable(id transferID, index int64) error {
	if r.closed {
		return &TransferError{ID: id.String(), Index: index, Err: ErrClosed}
	}
	if e, ok := r.ended[id]; ok && e.completed {
		return &TransferError{ID: id.String(), Name: e.name, Index: index, Err: ErrAlreadyReceived}
	}
	return nil
}

func (r *Receiver) isAborted(id transferID) bool {
	e, ok := r.ended[id]
	return ok && !e.completed
}

// lookup returns the state of transfer id: in memory, or read from its spool (the
// data key unwrapped again with the keyring), or nil if it has none. kid and wrapped
// are what the chunk at hand names.
func (r *Receiver) lookup(ctx context.Context, id transferID, kid, wrapped string, index int64) (*transfer, error) {
	if t := r.open[id]; t != nil {
		if t.stale {
			if err := r.load(t); err != nil {
				return nil, r.named(t, index, err)
			}
		}
		return t, nil
	}
	f, err := r.openSpool(id, os.O_RDONLY)
	if errors.Is(err, fs.ErrNotExist) {
		delete(r.disk, id)
		return nil, nil
	}
	if err != nil {
		return nil, &TransferError{ID: id.String(), Index: index, Err: spoolErr("open", id, err)}
	}
	pre, err := readPreamble(f)
	f.Close()
	if err == nil && pre.id != id {
		err = errBadSpool
	}
	if errors.Is(err, errBadSpool) {
		// Torn as it was created: nothing of it was acknowledged.
		if err := r.root.Remove(spoolName(id)); err != nil {
			return nil, &TransferError{ID: id.String(), Index: index, Err: spoolErr("remove", id, err)}
		}
		r.log.Warn("filestream: removed partial state", "transfer", id.String(), "reason", "not a partial state file")
		delete(r.disk, id)
		return nil, nil
	}
	if err != nil {
		return nil, &TransferError{ID: id.String(), Index: index, Err: spoolErr("read", id, err)}
	}
	t := &transfer{id: id, kid: pre.kid, wrapped: pre.wrapped, end: pre.len, next: 1, last: r.now()}
	if kid != pre.kid || wrapped != pre.wrapped {
		return nil, r.abort(t, index, fmt.Errorf("%w: data key differs from the transfer's", ErrAuth))
	}
	aead, err := r.unwrap(ctx, kid, wrapped)
	if err != nil {
		if errors.Is(err, keyring.ErrVersionTooOld) { // retired on purpose: never had again
			return nil, r.abort(t, index, err)
		}
		// The spool was written only once this very wrapped key had unwrapped and its
		// chunks authenticated under it: a key service that now calls it invalid has
		// changed (another server, the key deleted and made again), not the message.
		// Aborting would remove chunks acknowledged long ago.
		return nil, &TransferError{ID: id.String(), Index: index, Err: fault.Mark(err, fault.Environment)}
	}
	if err := r.usable(id, index); err != nil {
		return nil, err
	}
	if t := r.open[id]; t != nil { // another call read it meanwhile
		return t, nil
	}
	t.aead = aead
	if err := r.load(t); err != nil {
		if fault.ClassOf(err) == fault.Message {
			return nil, r.abort(t, index, err)
		}
		return nil, r.named(t, index, err)
	}
	r.register(t)
	r.log.Info("filestream: resuming a transfer from its partial state", "transfer", id.String(), "chunks", t.seen.count)
	return t, nil
}

// unwrap asks the keyring for a data key, without holding the lock: the key service may
// be slow, and other transfers can go on meanwhile. Callers check the state again after.
func (r *Receiver) unwrap(ctx context.Context, kid, wrapped string) (cipher.AEAD, error) {
	r.mu.Unlock()
	defer r.mu.Lock()
	pt, err := r.kr.UnwrapDataKey(ctx, kid, wrapped)
	if err != nil {
		return nil, err
	}
	defer clear(pt)
	dk := &keyring.DataKey{Plaintext: pt, Wrapped: wrapped, KeyID: kid}
	aead, err := dk.AEAD()
	if err != nil {
		return nil, fmt.Errorf("%w: unwrapped data key: %v", ErrAuth, err)
	}
	return aead, nil
}

// load reads t's spool: every record is authenticated again, and the spool ends at the
// first that is not whole or does not authenticate (a write torn by a crash: its chunk
// was never acknowledged).
func (r *Receiver) load(t *transfer) error {
	f, err := r.openSpool(t.id, os.O_RDONLY)
	if err != nil {
		return spoolErr("open", t.id, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return spoolErr("stat", t.id, err)
	}
	pre, err := readPreamble(f)
	if err != nil || pre.id != t.id || pre.kid != t.kid || pre.wrapped != t.wrapped {
		return spoolErr("read", t.id, fmt.Errorf("preamble changed: %v", err))
	}
	t.started, t.hdr, t.chunks, t.seen, t.got, t.early, t.final = false, fileHeader{}, 0, chunkSet{}, 0, nil, 0
	off, size := pre.len, fi.Size()
	for {
		rec, err := readRecord(f, off, size)
		if errors.Is(err, io.EOF) || errors.Is(err, errTorn) {
			break
		}
		if err != nil {
			return spoolErr("read", t.id, err)
		}
		if cap(r.buf) < int(rec.n) {
			r.buf = make([]byte, rec.n)
		}
		body := r.buf[:rec.n]
		if _, err := f.ReadAt(body, rec.off+recHeaderLen); err != nil {
			return spoolErr("read", t.id, err)
		}
		pt, err := r.openChunk(t, rec.index, rec.final, body[:0], body)
		if err != nil {
			break
		}
		if err := t.apply(rec, pt); err != nil {
			return err
		}
		off = rec.next()
	}
	if t.started {
		if err := t.checkEarly(); err != nil {
			return err
		}
		t.early = nil
	}
	t.next = t.seen.firstMissing()
	t.end = off
	if off < size {
		w, err := r.openSpool(t.id, os.O_WRONLY)
		if err != nil {
			return spoolErr("open", t.id, err)
		}
		err = w.Truncate(off)
		if err == nil {
			err = syncData(w)
		}
		if cerr := w.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return spoolErr("truncate", t.id, err)
		}
		r.log.Warn("filestream: dropped the torn end of partial state", "transfer", t.id.String(), "bytes", size-off)
	}
	t.stale = false
	return nil
}

// apply records an authentic chunk read back from the spool.
func (t *transfer) apply(rec record, pt []byte) error {
	if rec.index == 0 {
		if t.started {
			return nil
		}
		h, err := parseHeader(pt)
		if err == nil {
			err = checkName(h.name)
		}
		if err != nil {
			return err
		}
		t.hdr, t.chunks, t.started = h, dataChunks(h.size, h.chunkSize), true
		return nil
	}
	if t.seen.has(rec.index) {
		return nil
	}
	t.seen.set(rec.index)
	t.got += uint64(len(pt))
	if rec.final {
		t.final = rec.index
	}
	if !t.started {
		t.early = append(t.early, rec)
	} else if err := checkData(&t.hdr, t.chunks, rec.index, rec.final, uint64(len(pt))); err != nil {
		return err
	}
	return nil
}

// checkEarly checks the data chunks stored before the header against it.
func (t *transfer) checkEarly() error {
	for _, e := range t.early {
		if err := checkData(&t.hdr, t.chunks, e.index, e.final, uint64(e.n-wire.TagSize)); err != nil {
			return fmt.Errorf("chunk %d: %w", e.index, err)
		}
	}
	return nil
}

// openChunk authenticates and decrypts one chunk of t into dst (which may be body[:0]).
func (r *Receiver) openChunk(t *transfer, index uint64, final bool, dst, body []byte) ([]byte, error) {
	nonce := wire.Nonce(index)
	r.ad = appendAD(r.ad[:0], t.id, index, final, t.kid, t.wrapped)
	pt, err := t.aead.Open(dst, nonce[:], body, r.ad)
	if err != nil {
		return nil, ErrAuth
	}
	return pt, nil
}

// register keeps t in memory, setting aside the least recently active transfer when
// MaxOpenTransfers are.
func (r *Receiver) register(t *transfer) {
	if _, ok := r.open[t.id]; !ok && len(r.open) >= r.opts.MaxOpenTransfers {
		var oldest *transfer
		for _, o := range r.open {
			if oldest == nil || o.last.Before(oldest.last) {
				oldest = o
			}
		}
		r.setAside(oldest)
	}
	r.open[t.id] = t
	delete(r.disk, t.id)
	delete(r.ended, t.id) // a transfer that starts over after an abort
}

// setAside drops t from memory; its spool stays, and is read again when its next chunk
// arrives.
func (r *Receiver) setAside(t *transfer) {
	delete(r.open, t.id)
	total := int64(0)
	if t.started {
		total = int64(t.chunks) + 1
	} else if t.final > 0 {
		total = int64(t.final) + 1
	}
	r.disk[t.id] = &spoolSummary{
		pre:     preamble{id: t.id, kid: t.kid, wrapped: t.wrapped},
		records: int64(t.seen.count) + b2i(t.started), total: total, size: t.end, modified: t.last,
	}
	r.log.Info("filestream: too many open transfers, setting the least recent aside", "transfer", t.id.String())
}

func b2i(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

// header handles the authentic chunk 0 of t, whose plaintext is pt.
func (r *Receiver) header(ctx context.Context, t *transfer, ref chunkRef, pt, body []byte) (*Done, error) {
	if ref.final {
		return nil, r.abort(t, 0, malformed("chunk 0 has the final flag"))
	}
	if t.started {
		// A redelivery: authentic, so the header already stored.
		return r.complete(ctx, t)
	}
	h, err := parseHeader(pt)
	if err != nil {
		return nil, r.abort(t, 0, err)
	}
	if err := checkName(h.name); err != nil {
		return nil, r.abortNamed(t, h.name, 0, err)
	}
	if fi, err := r.root.Lstat(h.name); err == nil && (!r.opts.Overwrite || fi.IsDir()) {
		return nil, r.abortNamed(t, h.name, 0, ErrExists)
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, &TransferError{ID: t.id.String(), Name: h.name, Index: 0, Err: storage("stat destination file", err)}
	}
	saved := t.hdr
	t.hdr, t.chunks = h, dataChunks(h.size, h.chunkSize)
	if err := t.checkEarly(); err != nil {
		return nil, r.abort(t, 0, err)
	}
	if err := r.store(t, ref, body); err != nil {
		t.hdr, t.chunks = saved, 0
		return nil, &TransferError{ID: t.id.String(), Name: h.name, Index: 0, Err: err}
	}
	t.started = true
	early := t.early
	t.early = nil
	if r.opts.Progress != nil {
		// One call per chunk stored, those that came before the header too.
		r.opts.Progress(h.name, 0, int64(h.size))
		got := int64(0)
		for _, e := range early {
			got += e.n - wire.TagSize
			r.opts.Progress(h.name, got, int64(h.size))
		}
	}
	return r.complete(ctx, t)
}

// data handles the authentic data chunk ref.index of t, whose plaintext is pt.
func (r *Receiver) data(ctx context.Context, t *transfer, ref chunkRef, pt, body []byte) (*Done, error) {
	i := ref.index
	if t.seen.has(i) {
		// A redelivery (after a restart, the broker's position lags the
		// acknowledgements): authentic under the file's key with this index, so the same
		// bytes as the chunk stored.
		return r.complete(ctx, t)
	}
	if t.started {
		if err := checkData(&t.hdr, t.chunks, i, ref.final, uint64(len(pt))); err != nil {
			return nil, r.abort(t, int64(i), err)
		}
	}
	if !r.opts.Unordered && i != t.next {
		return nil, r.abort(t, int64(i), fmt.Errorf("%w: expected chunk %d (chunks lost or reordered)", ErrOrder, t.next))
	}
	if err := r.store(t, ref, body); err != nil {
		return nil, r.named(t, int64(i), err)
	}
	t.seen.set(i)
	t.got += uint64(len(pt))
	if ref.final {
		t.final = i
	}
	if !t.started {
		t.early = append(t.early, record{index: i, final: ref.final, n: int64(len(body))})
	}
	for t.seen.has(t.next) {
		t.next++
	}
	if t.started && r.opts.Progress != nil {
		r.opts.Progress(t.hdr.name, int64(t.got), int64(t.hdr.size))
	}
	return r.complete(ctx, t)
}

// store appends an authentic chunk to t's spool, creating it for the first, and makes it
// durable. On failure t is as it was (its spool is read again before the next chunk).
func (r *Receiver) store(t *transfer, ref chunkRef, body []byte) error {
	r.rec = appendRecordHeader(r.rec[:0], ref.index, ref.final, len(body))
	if t.end == 0 {
		return r.create(t, body)
	}
	f, err := r.openSpool(t.id, os.O_WRONLY)
	if errors.Is(err, fs.ErrNotExist) {
		// Removed behind our back: nothing to go on from.
		delete(r.open, t.id)
		return spoolErr("open", t.id, err)
	}
	if err != nil {
		return spoolErr("open", t.id, err)
	}
	_, err = f.WriteAt(r.rec, t.end)
	if err == nil {
		_, err = f.WriteAt(body, t.end+int64(len(r.rec)))
	}
	if err == nil {
		err = syncData(f)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.stale = true
		return spoolErr("append to", t.id, err)
	}
	t.end += int64(len(r.rec) + len(body))
	return nil
}

// create writes t's spool with its first chunk; t is registered once it is durable.
func (r *Receiver) create(t *transfer, body []byte) error {
	name := spoolName(t.id)
	f, err := r.root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return spoolErr("create", t.id, err)
	}
	pre := appendPreamble(nil, t.id, t.kid, t.wrapped)
	_, err = f.Write(pre)
	if err == nil {
		_, err = f.Write(r.rec)
	}
	if err == nil {
		_, err = f.Write(body)
	}
	if err == nil {
		err = syncData(f)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = r.dirf.Sync() // the name, too, must survive a crash before the chunk is acknowledged
	}
	if err != nil {
		r.root.Remove(name)
		return spoolErr("create", t.id, err)
	}
	t.end = int64(len(pre) + len(r.rec) + len(body))
	r.register(t)
	return nil
}

// complete assembles and installs t's file if every chunk is stored.
func (r *Receiver) complete(ctx context.Context, t *transfer) (*Done, error) {
	if !t.started || t.seen.count < t.chunks {
		return nil, nil
	}
	return r.assemble(ctx, t)
}

// output is a file being assembled: unnamed (name "") or a named temporary file.
type output struct {
	f    *os.File
	name string
}

// assemble decrypts t's spool into a new file, makes it durable and installs it under
// its name. On an environment fault the transfer stays as it was (the spool is whole);
// the next chunk of it, a redelivery, or Resume in a later Receiver tries again.
func (r *Receiver) assemble(ctx context.Context, t *transfer) (*Done, error) {
	last := int64(t.chunks)
	out, err := r.createOutput(t.id)
	if err != nil {
		return nil, r.named(t, last, err)
	}
	installed := false
	defer func() {
		if !installed {
			r.dropOutput(out)
		}
	}()
	if err := r.decryptSpool(t, out.f); err != nil {
		if fault.ClassOf(err) == fault.Message {
			return nil, r.abort(t, last, err)
		}
		return nil, r.named(t, last, err)
	}
	if r.opts.Preserve && t.hdr.mode != 0 {
		if err := out.f.Chmod(fs.FileMode(t.hdr.mode)); err != nil {
			return nil, r.named(t, last, storage("chmod received file", err))
		}
	}
	if err := out.f.Sync(); err != nil {
		return nil, r.named(t, last, storage("sync received file", err))
	}
	var mtime time.Time
	if t.hdr.mtime != 0 {
		mtime = time.Unix(0, t.hdr.mtime)
	}
	if r.opts.Preserve && !mtime.IsZero() {
		err := error(nil)
		if out.name == "" {
			err = setTimes(out.f, mtime)
		} else {
			err = r.root.Chtimes(out.name, mtime, mtime)
		}
		if err != nil {
			return nil, r.named(t, last, storage("set the time of the received file", err))
		}
	}
	if err := r.install(t.id, out, t.hdr.name); err != nil {
		if fault.ClassOf(err) == fault.Message {
			return nil, r.abort(t, last, err)
		}
		return nil, r.named(t, last, err)
	}
	installed = true
	out.f.Close()
	// Make the name durable, then forget the transfer's partial state.
	if err := r.dirf.Sync(); err != nil {
		r.log.WarnContext(ctx, "filestream: syncing the destination directory", "transfer", t.id.String(), "error", err)
	}
	r.recordCompleted(t.id)
	if err := r.root.Remove(spoolName(t.id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		r.log.WarnContext(ctx, "filestream: removing the partial state of a completed transfer", "transfer", t.id.String(), "error", err)
	}
	delete(r.open, t.id)
	r.remember(t.id, ending{completed: true, name: t.hdr.name})
	r.log.InfoContext(ctx, "filestream: received file", "transfer", t.id.String(), "size", t.hdr.size, "chunks", t.chunks+1)
	return &Done{
		TransferID: t.id.String(), Name: t.hdr.name, Path: filepath.Join(r.dir, t.hdr.name),
		Size: int64(t.hdr.size), Mode: fs.FileMode(t.hdr.mode), ModTime: mtime, Chunks: int64(t.chunks + 1),
	}, nil
}

// decryptSpool writes the plaintext of t's data chunks, each at its offset, to out.
// Memory: one chunk.
func (r *Receiver) decryptSpool(t *transfer, out *os.File) error {
	f, err := r.openSpool(t.id, os.O_RDONLY)
	if err != nil {
		return spoolErr("open", t.id, err)
	}
	defer f.Close()
	pre, err := readPreamble(f)
	if err != nil {
		return spoolErr("read", t.id, err)
	}
	buf := make([]byte, int(t.hdr.chunkSize)+wire.TagSize)
	var written uint64
	for off := pre.len; off < t.end; {
		rec, err := readRecord(f, off, t.end)
		if err != nil {
			if errors.Is(err, errTorn) || errors.Is(err, io.EOF) {
				return fmt.Errorf("%w: partial state in the destination changed on disk", ErrAuth)
			}
			return spoolErr("read", t.id, err)
		}
		off = rec.next()
		if rec.index == 0 {
			continue // the header, applied already
		}
		if rec.n > int64(len(buf)) {
			return fmt.Errorf("%w: partial state in the destination changed on disk", ErrAuth)
		}
		body := buf[:rec.n]
		if _, err := f.ReadAt(body, rec.off+recHeaderLen); err != nil {
			return spoolErr("read", t.id, err)
		}
		pt, err := r.openChunk(t, rec.index, rec.final, body[:0], body)
		if err != nil {
			return fmt.Errorf("%w: partial state in the destination changed on disk", ErrAuth)
		}
		if _, err := out.WriteAt(pt, int64((rec.index-1)*uint64(t.hdr.chunkSize))); err != nil {
			return storage("write received file", err)
		}
		written += uint64(len(pt))
	}
	if written != t.hdr.size { // follows from the checks on arrival; kept as the last word
		return malformed("assembled %d bytes, the header says %d", written, t.hdr.size)
	}
	return nil
}

func (r *Receiver) createOutput(id transferID) (*output, error) {
	if r.unnamed {
		f, err := openUnnamed(r.dirf)
		if err == nil {
			return &output{f: f}, nil
		}
		if !errors.Is(err, errNoUnnamed) {
			return nil, storage("create received file", err)
		}
	}
	name := tmpName(id)
	if err := r.root.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, storage("remove "+name, err)
	}
	f, err := r.root.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, storage("create "+name, err)
	}
	return &output{f: f, name: name}, nil
}

func (r *Receiver) dropOutput(o *output) {
	o.f.Close()
	if o.name != "" {
		if err := r.root.Remove(o.name); err != nil && !errors.Is(err, fs.ErrNotExist) {
			r.log.Error("filestream: removing a temporary file", "file", o.name, "error", err)
		}
	}
}

// install gives the complete file out the name name. Without Overwrite an existing name
// is never replaced: the link fails if it exists. (If what is there has exactly the
// file's content, it is this transfer installed before a crash: that is success.)
func (r *Receiver) install(id transferID, out *output, name string) error {
	if r.opts.Overwrite {
		if fi, err := r.root.Lstat(name); err == nil && fi.IsDir() {
			return ErrExists
		}
		tmp := out.name
		if tmp == "" { // rename needs a name to rename from
			tmp = tmpName(id)
			if err := r.root.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return storage("remove "+tmp, err)
			}
			if err := linkUnnamed(out.f, r.dirf, tmp); err != nil {
				return storage("link received file", err)
			}
		}
		if err := r.root.Rename(tmp, name); err != nil {
			r.root.Remove(tmp)
			return storage("rename received file", err)
		}
		return nil
	}
	var err error
	if out.name == "" {
		err = linkUnnamed(out.f, r.dirf, name)
	} else {
		err = r.root.Link(out.name, name)
	}
	switch {
	case err == nil:
	case errors.Is(err, fs.ErrExist):
		if err := r.sameContent(out.f, name); err != nil {
			return err
		}
	case out.name == "":
		return storage("link received file", err)
	default:
		// No hard links on this file system: check, then rename. Only a file created at
		// name between the two calls could be replaced.
		if _, err := r.root.Lstat(name); err == nil {
			return ErrExists
		}
		if err := r.root.Rename(out.name, name); err != nil {
			return storage("rename received file", err)
		}
		return nil
	}
	if out.name != "" {
		if err := r.root.Remove(out.name); err != nil && !errors.Is(err, fs.ErrNotExist) {
			r.log.Warn("filestream: removing a temporary file", "file", out.name, "error", err)
		}
	}
	return nil
}

// sameContent returns nil if the regular file name holds exactly what f holds, and
// ErrExists otherwise.
func (r *Receiver) sameContent(f *os.File, name string) error {
	fi, err := r.root.Lstat(name)
	if err != nil || !fi.Mode().IsRegular() {
		return ErrExists
	}
	ofi, err := f.Stat()
	if err != nil {
		return storage("stat received file", err)
	}
	if fi.Size() != ofi.Size() {
		return ErrExists
	}
	g, err := r.root.Open(name)
	if err != nil {
		return ErrExists
	}
	defer g.Close()
	a, b := make([]byte, 64<<10), make([]byte, 64<<10)
	for off := int64(0); off < fi.Size(); off += int64(len(a)) {
		n, err := f.ReadAt(a, off)
		if err != nil && !errors.Is(err, io.EOF) {
			return storage("read received file", err)
		}
		m, err := g.ReadAt(b[:n], off)
		if err != nil && !errors.Is(err, io.EOF) {
			return storage("read "+name, err)
		}
		if m != n || !bytes.Equal(a[:n], b[:n]) {
			return ErrExists
		}
	}
	return nil
}

// abortNamed aborts t, whose header named the file name, with err.
func (r *Receiver) abortNamed(t *transfer, name string, index int64, err error) error {
	t.hdr.name = name
	return r.abort(t, index, err)
}

// named wraps an error that does not end transfer t.
func (r *Receiver) named(t *transfer, index int64, err error) error {
	return &TransferError{ID: t.id.String(), Name: t.hdr.name, Index: index, Err: err}
}

// checkData checks an authentic data chunk against the header: its index, final flag
// and length.
func checkData(h *fileHeader, chunks, index uint64, final bool, n uint64) error {
	switch {
	case index > chunks:
		return malformed("chunk %d, but the file has %d data chunks", index, chunks)
	case final != (index == chunks):
		return malformed("final flag %t, but the file has %d data chunks", final, chunks)
	case n != h.chunkLen(index, chunks):
		return malformed("%d bytes, want %d", n, h.chunkLen(index, chunks))
	}
	return nil
}

// notOpen reports a data chunk of a transfer that is not in progress.
func (r *Receiver) notOpen(ref chunkRef) error {
	if e, ok := r.ended[ref.id]; ok {
		return &TransferError{ID: ref.id.String(), Name: e.name, Index: int64(ref.index), Err: fmt.Errorf("%w (%v)", ErrAborted, kindOf(e.reason))}
	}
	return &TransferError{ID: ref.id.String(), Index: int64(ref.index), Err: ErrUnknownTransfer}
}

// fail reports err for a chunk of transfer id that could not be read, aborting the
// transfer if it is in progress.
func (r *Receiver) fail(id transferID, index int64, err error) error {
	if t := r.open[id]; t != nil {
		return r.abort(t, index, err)
	}
	e, ok := r.ended[id]
	if ok && e.completed {
		return &TransferError{ID: id.String(), Name: e.name, Index: index, Err: err}
	}
	// Partial state on disk is a transfer in progress too.
	if rerr := r.root.Remove(spoolName(id)); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
		r.log.Error("filestream: removing partial state", "transfer", id.String(), "error", rerr)
	}
	delete(r.disk, id)
	// Remember the failure, so that the transfer's later chunks are reported as aborted
	// rather than unknown.
	r.remember(id, ending{name: e.name, reason: err})
	r.log.Warn("filestream: chunk refused", "transfer", id.String(), "chunk", index, "error", kindOf(err))
	return &TransferError{ID: id.String(), Name: e.name, Index: index, Err: err}
}

// abort ends transfer t with err: its partial state is removed.
func (r *Receiver) abort(t *transfer, index int64, err error) error {
	r.discard(t)
	r.remember(t.id, ending{name: t.hdr.name, reason: err})
	r.log.Warn("filestream: transfer failed", "transfer", t.id.String(), "chunk", index, "error", kindOf(err))
	return &TransferError{ID: t.id.String(), Name: t.hdr.name, Index: index, Err: err}
}

// discard removes t's partial state and forgets t.
func (r *Receiver) discard(t *transfer) {
	if t.end > 0 {
		if err := r.root.Remove(spoolName(t.id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			r.log.Error("filestream: removing partial state", "transfer", t.id.String(), "error", err)
		}
	}
	if r.open[t.id] == t {
		delete(r.open, t.id)
	}
	delete(r.disk, t.id)
}

// remember records how transfer id ended, forgetting the oldest record beyond maxEnded.
func (r *Receiver) remember(id transferID, e ending) {
	r.seq++
	e.seq = r.seq
	r.ended[id] = e
	r.order = append(r.order, endedRef{id, e.seq})
	for len(r.order) > maxEnded {
		old := r.order[0]
		r.order = r.order[1:]
		if cur, ok := r.ended[old.id]; ok && cur.seq == old.seq {
			delete(r.ended, old.id)
		}
	}
	if cap(r.order) > 4*maxEnded { // let the backing array go now and then
		r.order = append([]endedRef(nil), r.order...)
	}
}

// Resume finishes the transfers whose every chunk was stored by an earlier Receiver on
// this directory but that were not installed (it stopped while assembling them), and
// returns them. It unwraps their data keys with the keyring. Call it once after
// NewReceiver; transfers still missing chunks go on when those chunks arrive.
//
// Errors are *TransferError values, joined; as with Handle, those of class
// fault.Environment leave the transfer for a later try.
func (r *Receiver) Resume(ctx context.Context) ([]*Done, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var ids []transferID
	for id, s := range r.disk {
		if s.complete {
			ids = append(ids, id)
		}
	}
	slices.SortFunc(ids, func(a, b transferID) int { return bytes.Compare(a[:], b[:]) })
	var done []*Done
	var errs []error
	for _, id := range ids {
		s := r.disk[id]
		if s == nil || r.closed {
			continue
		}
		t, err := r.lookup(ctx, id, s.pre.kid, s.pre.wrapped, -1)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if t == nil {
			continue
		}
		d, err := r.complete(ctx, t)
		if err != nil {
			errs = append(errs, err)
		}
		if d != nil {
			done = append(done, d)
		}
	}
	return done, errors.Join(errs...)
}

// Partials lists the transfers in progress: their chunks are stored in the destination
// directory, and they complete when the rest arrives (in this Receiver or a later one).
func (r *Receiver) Partials() []Partial {
	r.mu.Lock()
	defer r.mu.Unlock()
	var ps []Partial
	for _, t := range r.open {
		p := Partial{TransferID: t.id.String(), Name: t.hdr.name, Chunks: int64(t.seen.count) + b2i(t.started), Bytes: t.end}
		if t.started {
			p.Total = int64(t.chunks) + 1
		} else if t.final > 0 {
			p.Total = int64(t.final) + 1
		}
		ps = append(ps, p)
	}
	for id, s := range r.disk {
		ps = append(ps, Partial{TransferID: id.String(), Chunks: s.records, Total: s.total, Bytes: s.size})
	}
	slices.SortFunc(ps, func(a, b Partial) int { return strings.Compare(a.TransferID, b.TransferID) })
	return ps
}

// Expire gives up the transfers that received no chunk for idle or longer (in memory, or
// on disk untouched that long), removes their partial state and returns an error
// (ErrIncomplete) for each, joined. Call it now and then when senders may die
// mid-transfer.
func (r *Receiver) Expire(idle time.Duration) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	var errs []error
	for _, t := range r.open {
		if now.Sub(t.last) >= idle {
			errs = append(errs, r.abort(t, -1, r.incomplete(t, fmt.Sprintf("no chunk for %v", idle))))
		}
	}
	for id, s := range r.disk {
		if now.Sub(s.modified) >= idle {
			t := &transfer{id: id, end: s.size}
			errs = append(errs, r.abort(t, -1, fmt.Errorf("%w: no chunk for %v, with %d chunks stored", ErrIncomplete, idle, s.records)))
		}
	}
	return errors.Join(errs...)
}

// Close releases the destination directory. The partial state of transfers in progress
// stays there: a Receiver started later on the directory goes on with them. The Receiver
// cannot be used afterwards.
func (r *Receiver) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil
	}
	r.closed = true
	return errors.Join(r.root.Close(), r.dirf.Close())
}

func (r *Receiver) incomplete(t *transfer, why string) error {
	if !t.started {
		return fmt.Errorf("%w: %s before chunk 0, with %d data chunks stored", ErrIncomplete, why, t.seen.count)
	}
	return fmt.Errorf("%w: %s after %d of %d chunks (%d of %d bytes)", ErrIncomplete, why, t.seen.count+1, t.chunks+1, t.got, t.hdr.size)
}

// kindOf names the kind of a transfer failure for log lines.
func kindOf(err error) string {
	for _, k := range []error{ErrMalformed, ErrAuth, ErrOrder, ErrUnknownTransfer, ErrAborted, ErrIncomplete, ErrUnsafeName, ErrExists, ErrStorage} {
		if errors.Is(err, k) {
			return k.Error()
		}
	}
	if err == nil {
		return ""
	}
	return err.Error()
}

// parseMessage reads the format's metadata entries. idOK reports whether ref.id is set,
// even when err is not nil.
func parseMessage(md map[string]string) (ref chunkRef, wrapped string, idOK bool, err error) {
	v, ok := md[ChunkKey]
	if !ok {
		return ref, "", false, ErrNotChunk
	}
	ref, idOK, err = parseRef(v)
	if err != nil {
		return ref, "", idOK, err
	}
	for k := range md {
		if wire.Reserved(k) && k != ChunkKey && k != DEKKey {
			return ref, "", true, fmt.Errorf("%w %.64q", errReservedKey, k)
		}
	}
	wrapped, ok = md[DEKKey]
	if !ok || !wire.ValidValue(wrapped) {
		return ref, "", true, errDEK
	}
	return ref, wrapped, true, nil
}

var (
	errReservedKey = fmt.Errorf("%w: unknown reserved metadata key", ErrMalformed)
	errDEK         = fmt.Errorf("%w: %q entry missing or not 1-%d bytes of printable ASCII", ErrMalformed, DEKKey, wire.MaxValueLen)
)
