package filestream

import (
	"bytes"
	"context"
	"crypto/cipher"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/pubcrypt/pubcrypt/internal/envelope"
	"github.com/pubcrypt/pubcrypt/keyring"
)

// ReceiveOptions configure a Receiver. The zero value is useful.
type ReceiveOptions struct {
	// Logger receives one line per finished or failed transfer (transfer ID and reason,
	// never the file name); nil discards them.
	Logger *slog.Logger
	// Progress, if set, is called after each chunk written, with the file name, the bytes
	// received so far and the file size. It runs while the Receiver is locked: it must
	// not call the Receiver.
	Progress func(name string, got, total int64)
	// MaxOpenTransfers bounds the transfers in progress at once (one open file each);
	// 0 means 64. When a new transfer starts at the limit, the one that has waited
	// longest for its next chunk is aborted with ErrIncomplete.
	MaxOpenTransfers int
	// Overwrite lets a received file replace an existing file of the same name. Without
	// it, such a transfer fails with ErrExists and the existing file is left alone.
	Overwrite bool
	// Preserve applies the sender's permission bits and modification time to the received
	// file. Without it, a received file has mode 0600 and the time it was written.
	Preserve bool
	// Unordered accepts the chunks of a transfer in any order, for brokers that do not
	// keep order (Google Pub/Sub, SQS standard queues). Each chunk is still authenticated
	// on arrival; data chunks are written at their offset in the partial file; a
	// redelivered chunk already received is ignored; the file is installed once chunk 0
	// and every data chunk have arrived (docs/FILES.md, section 10.2). Without it, the
	// chunks of a transfer must arrive in order, and a gap, duplicate or reordered chunk
	// aborts the transfer with ErrOrder.
	Unordered bool
	// MaxBuffered bounds, with Unordered, the data chunks the Receiver holds in memory
	// for transfers whose chunk 0 (which gives the chunk size and file name) has not
	// arrived yet, all transfers together; 0 means 16. A data chunk beyond the bound
	// aborts its transfer with ErrBufferFull. Each held chunk takes up to the sender's
	// chunk size in memory.
	MaxBuffered int
}

// Done describes a file that was received completely and renamed into place.
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

// Receiver reassembles files from chunk messages into a destination directory. Chunks of
// several transfers may interleave; the chunks of one transfer must be passed in the
// order they were sent, unless ReceiveOptions.Unordered is set. It is safe for
// concurrent use; calls are serialized except while a data key is being unwrapped.
type Receiver struct {
	kr   keyring.Keyring
	dir  string
	root *os.Root
	opts ReceiveOptions
	log  *slog.Logger
	now  func() time.Time

	mu     sync.Mutex
	closed bool
	open   map[transferID]*transfer
	ended  map[transferID]ending
	order  []endedRef // ring of ended transfers, oldest first, to bound ended
	seq    uint64
	buf    []byte // plaintext of the chunk being handled
	ad     []byte // its associated data

	buffered int // data chunks held in early, all transfers (Unordered)
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
	hdr          fileHeader
	chunks       uint64 // data chunks
	next         uint64 // index expected next
	got          uint64 // bytes written
	file         *os.File
	tmp          string // name of the partial file in the destination directory
	last         time.Time

	// started: chunk 0 was accepted, so hdr, chunks, file and tmp are set. Always true
	// in strict order; with Unordered, a transfer may open with a data chunk.
	started bool
	// Unordered only.
	early map[uint64]earlyChunk // authentic data chunks received before chunk 0
	seen  []uint64              // data chunks written: bit i-1 for chunk i
	count uint64                // data chunks written
}

// earlyChunk is a data chunk held until its transfer's header arrives.
type earlyChunk struct {
	final bool
	pt    []byte
}

// NewReceiver returns a Receiver that unwraps data keys with kr and writes files into
// destDir, an existing directory. Files stay in temporary files named
// ".pubcrypt-partial-*" (mode 0600) in destDir until they are complete.
func NewReceiver(kr keyring.Keyring, destDir string, opts ReceiveOptions) (*Receiver, error) {
	if kr == nil {
		return nil, invalid("no keyring")
	}
	if opts.MaxOpenTransfers <= 0 {
		opts.MaxOpenTransfers = 64
	}
	if opts.MaxBuffered <= 0 {
		opts.MaxBuffered = 16
	}
	root, err := os.OpenRoot(destDir)
	if err != nil {
		return nil, fmt.Errorf("filestream: destination: %w", err)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Receiver{
		kr: kr, dir: destDir, root: root, opts: opts, log: log, now: time.Now,
		open: make(map[transferID]*transfer), ended: make(map[transferID]ending),
	}, nil
}

// Handle processes one received message. It returns a *Done when the message completed a
// file, which is then in the destination directory, and nil, nil while a transfer is in
// progress.
//
// Errors are *TransferError values naming the transfer. A redelivered chunk of a transfer
// already completed is ignored and reported as ErrAlreadyReceived, which is not a
// failure: acknowledge the message. A chunk that fails (malformed,
// tampered with, foreign, duplicated, out of order) aborts its transfer: the partial file
// is removed, and later chunks of the transfer fail with ErrAborted until its chunk 0
// arrives again, which starts it over (a consumer that re-reads a topic from an earlier
// offset thus completes the file). A key service failure on chunk 0 leaves the transfer
// not started, so the same message may be tried again.
//
// With ReceiveOptions.Unordered, chunks of a transfer may come in any order: a chunk
// already received (a redelivery) is ignored and Handle returns nil, nil; the *Done comes
// with whichever chunk completes the file, chunk 0 included.
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
	if r.closed {
		return nil, &TransferError{ID: ref.id.String(), Index: int64(ref.index), Err: ErrClosed}
	}
	if e, ok := r.ended[ref.id]; ok && e.completed {
		return nil, &TransferError{ID: ref.id.String(), Name: e.name, Index: int64(ref.index), Err: ErrAlreadyReceived}
	}
	t := r.open[ref.id]
	if ref.index > 0 {
		if r.opts.Unordered {
			return r.unorderedData(ctx, t, ref, wrapped, body)
		}
		if t == nil {
			return nil, r.notOpen(ref)
		}
		return r.data(ctx, t, ref, wrapped, body)
	}

	// Chunk 0: a new transfer, or a transfer starting over.
	var aead cipher.AEAD
	switch {
	case t != nil && t.kid == ref.kid && t.wrapped == wrapped:
		aead = t.aead // starting over: same key, no key service call
	case t != nil:
		return nil, r.abort(t, 0, fmt.Errorf("%w: data key differs from the transfer's", ErrAuth))
	default:
		// The key service may be slow: let other transfers proceed meanwhile.
		r.mu.Unlock()
		aead, err = unwrap(ctx, r.kr, ref.kid, wrapped)
		r.mu.Lock()
		if err != nil {
			return nil, &TransferError{ID: ref.id.String(), Index: 0, Err: err}
		}
		if r.closed {
			return nil, &TransferError{ID: ref.id.String(), Index: 0, Err: ErrClosed}
		}
		if e, ok := r.ended[ref.id]; ok && e.completed {
			return nil, &TransferError{ID: ref.id.String(), Name: e.name, Index: 0, Err: ErrAlreadyReceived}
		}
		t = r.open[ref.id] // another call may have started it meanwhile
	}
	return r.start(ctx, t, ref, wrapped, aead, body)
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
		if envelope.Reserved(k) && k != ChunkKey && k != DEKKey {
			return ref, "", true, fmt.Errorf("%w %.64q", errReservedKey, k)
		}
	}
	wrapped, ok = md[DEKKey]
	if !ok || !envelope.ValidValue(wrapped) {
		return ref, "", true, errDEK
	}
	return ref, wrapped, true, nil
}

var (
	errReservedKey = fmt.Errorf("%w: unknown reserved metadata key", ErrMalformed)
	errDEK         = fmt.Errorf("%w: %q entry missing or not 1-%d bytes of printable ASCII", ErrMalformed, DEKKey, maxValueLen)
)

func unwrap(ctx context.Context, kr keyring.Keyring, kid, wrapped string) (cipher.AEAD, error) {
	pt, err := kr.UnwrapDataKey(ctx, kid, wrapped)
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

// decrypt authenticates and decrypts one chunk into r.buf.
func (r *Receiver) decrypt(aead cipher.AEAD, id transferID, ref chunkRef, wrapped string, body []byte, maxPlain uint64) ([]byte, error) {
	if len(body) < tagSize || uint64(len(body)-tagSize) > maxPlain {
		return nil, malformed("body of %d bytes, want %d to %d", len(body), tagSize, maxPlain+tagSize)
	}
	if cap(r.buf) < len(body) {
		r.buf = make([]byte, len(body))
	}
	nonce := nonceFor(ref.index)
	r.ad = appendAD(r.ad[:0], id, ref.index, ref.final, ref.kid, wrapped)
	pt, err := aead.Open(r.buf[:0], nonce[:], body, r.ad)
	if err != nil {
		return nil, ErrAuth
	}
	return pt, nil
}

// start handles an authentic-looking chunk 0 of transfer ref.id; t is the transfer in
// progress under that ID, if any. With Unordered it returns a *Done when the data chunks
// had all arrived before chunk 0.
func (r *Receiver) start(ctx context.Context, t *transfer, ref chunkRef, wrapped string, aead cipher.AEAD, body []byte) (*Done, error) {
	pt, err := r.decrypt(aead, ref.id, ref, wrapped, body, headerLen)
	if err != nil {
		return nil, r.fail(ref.id, 0, err)
	}
	if ref.final {
		return nil, r.fail(ref.id, 0, malformed("chunk 0 has the final flag"))
	}
	if r.opts.Unordered && t != nil && t.started {
		// A redelivered chunk 0: authentic, so the header is the one already applied.
		t.last = r.now()
		return nil, nil
	}
	h, err := parseHeader(pt)
	if err != nil {
		return nil, r.fail(ref.id, 0, err)
	}
	if err := checkName(h.name); err != nil {
		return nil, r.fail(ref.id, 0, err)
	}
	var pending *transfer // Unordered: the transfer opened by early data chunks
	if t != nil {
		if r.opts.Unordered {
			pending = t
		} else {
			r.log.InfoContext(ctx, "filestream: transfer starts over at chunk 0", "transfer", ref.id.String(), "chunks_received", t.next)
			r.discard(t)
		}
	}
	named := func(err error) error {
		if pending != nil {
			r.discard(pending)
		}
		r.remember(ref.id, ending{name: h.name, reason: err})
		r.log.WarnContext(ctx, "filestream: transfer failed", "transfer", ref.id.String(), "chunk", 0, "error", kindOf(err))
		return &TransferError{ID: ref.id.String(), Name: h.name, Index: 0, Err: err}
	}
	// Fail before any data arrives if the file cannot be installed (rename cannot
	// replace a directory either).
	if fi, err := r.root.Lstat(h.name); err == nil && (!r.opts.Overwrite || fi.IsDir()) {
		return nil, named(ErrExists)
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, named(err)
	}
	chunks := dataChunks(h.size, h.chunkSize)
	if pending != nil {
		// Check the held chunks against the header before creating anything.
		for i, c := range pending.early {
			if err := checkData(&h, chunks, i, c.final, uint64(len(c.pt))); err != nil {
				return nil, r.abortNamed(pending, h.name, int64(i), err)
			}
		}
	} else if len(r.open) >= r.opts.MaxOpenTransfers {
		r.evict(ctx)
	}
	f, tmp, err := r.createPartial()
	if err != nil {
		return nil, named(err)
	}
	t = pending
	if t == nil {
		t = &transfer{id: ref.id, kid: ref.kid, wrapped: wrapped, aead: aead}
		r.open[t.id] = t
		delete(r.ended, t.id)
	}
	t.hdr, t.chunks, t.next, t.file, t.tmp, t.last, t.started = h, chunks, 1, f, tmp, r.now(), true
	if r.opts.Unordered {
		t.seen = make([]uint64, (chunks+63)/64)
	}
	if r.opts.Progress != nil {
		r.opts.Progress(h.name, 0, int64(h.size))
	}
	// Write the chunks held for the header, in index order.
	for _, i := range slices.Sorted(maps.Keys(t.early)) {
		c := t.early[i]
		delete(t.early, i)
		r.buffered--
		if done, err := r.place(ctx, t, i, c.final, c.pt); done != nil || err != nil {
			return done, err
		}
	}
	t.early = nil
	return nil, nil
}

// abortNamed aborts t, whose header named the file name, with err.
func (r *Receiver) abortNamed(t *transfer, name string, index int64, err error) error {
	t.hdr.name = name
	return r.abort(t, index, err)
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

// unorderedData handles data chunk ref.index > 0 with Unordered; t is the transfer in
// progress under ref.id, if any. A chunk of a transfer not seen yet opens it, without
// a header: its data key is unwrapped (once per transfer) and the chunk is held in
// memory until chunk 0 arrives.
func (r *Receiver) unorderedData(ctx context.Context, t *transfer, ref chunkRef, wrapped string, body []byte) (*Done, error) {
	index := int64(ref.index)
	var aead cipher.AEAD
	if t == nil {
		if _, ok := r.ended[ref.id]; ok { // aborted: completed was handled by Handle
			return nil, r.notOpen(ref)
		}
		// The key service may be slow: let other transfers proceed meanwhile.
		r.mu.Unlock()
		a, err := unwrap(ctx, r.kr, ref.kid, wrapped)
		r.mu.Lock()
		if err != nil {
			return nil, &TransferError{ID: ref.id.String(), Index: index, Err: err}
		}
		if r.closed {
			return nil, &TransferError{ID: ref.id.String(), Index: index, Err: ErrClosed}
		}
		if e, ok := r.ended[ref.id]; ok && e.completed {
			return nil, &TransferError{ID: ref.id.String(), Name: e.name, Index: index, Err: ErrAlreadyReceived}
		}
		if t = r.open[ref.id]; t == nil { // another call may have opened it meanwhile
			if _, ok := r.ended[ref.id]; ok {
				return nil, r.notOpen(ref)
			}
			aead = a
		}
	}
	maxPlain := uint64(MaxChunkSize)
	if t != nil {
		t.last = r.now()
		if ref.kid != t.kid || wrapped != t.wrapped {
			return nil, r.abort(t, index, fmt.Errorf("%w: data key differs from the transfer's", ErrAuth))
		}
		aead = t.aead
		if t.started {
			maxPlain = uint64(t.hdr.chunkSize)
		}
	}
	pt, err := r.decrypt(aead, ref.id, ref, wrapped, body, maxPlain)
	if err != nil {
		return nil, r.fail(ref.id, index, err)
	}
	if t != nil && t.started {
		return r.place(ctx, t, ref.index, ref.final, pt)
	}
	if t == nil {
		if len(r.open) >= r.opts.MaxOpenTransfers {
			r.evict(ctx)
		}
		t = &transfer{id: ref.id, kid: ref.kid, wrapped: wrapped, aead: aead, last: r.now()}
		r.open[t.id] = t
		delete(r.ended, t.id)
	}
	if _, ok := t.early[ref.index]; ok {
		return nil, nil // redelivered; authentic, so the same bytes
	}
	if r.buffered >= r.opts.MaxBuffered {
		return nil, r.abort(t, index, fmt.Errorf("%w: %d data chunks already held for transfers whose chunk 0 has not arrived (MaxBuffered %d)", ErrBufferFull, r.buffered, r.opts.MaxBuffered))
	}
	if t.early == nil {
		t.early = make(map[uint64]earlyChunk)
	}
	t.early[ref.index] = earlyChunk{final: ref.final, pt: bytes.Clone(pt)}
	r.buffered++
	return nil, nil
}

// place writes authentic data chunk index of transfer t, whose header is known, at its
// offset (Unordered). A chunk already written is ignored.
func (r *Receiver) place(ctx context.Context, t *transfer, index uint64, final bool, pt []byte) (*Done, error) {
	if err := checkData(&t.hdr, t.chunks, index, final, uint64(len(pt))); err != nil {
		return nil, r.abort(t, int64(index), err)
	}
	word, bit := (index-1)/64, uint64(1)<<((index-1)%64)
	if t.seen[word]&bit != 0 {
		return nil, nil // redelivered; authentic, so the same bytes
	}
	if _, err := t.file.WriteAt(pt, int64((index-1)*uint64(t.hdr.chunkSize))); err != nil {
		return nil, r.abort(t, int64(index), err)
	}
	t.seen[word] |= bit
	t.count++
	t.got += uint64(len(pt))
	if r.opts.Progress != nil {
		r.opts.Progress(t.hdr.name, int64(t.got), int64(t.hdr.size))
	}
	if t.count < t.chunks {
		return nil, nil
	}
	if t.got != t.hdr.size { // follows from the checks above; kept as the last word
		return nil, r.abort(t, int64(index), malformed("received %d bytes, the header says %d", t.got, t.hdr.size))
	}
	return r.finish(ctx, t)
}

// data handles chunk ref.index > 0 of transfer t.
func (r *Receiver) data(ctx context.Context, t *transfer, ref chunkRef, wrapped string, body []byte) (*Done, error) {
	t.last = r.now()
	if ref.kid != t.kid || wrapped != t.wrapped {
		return nil, r.abort(t, int64(ref.index), fmt.Errorf("%w: data key differs from the transfer's", ErrAuth))
	}
	pt, err := r.decrypt(t.aead, t.id, ref, wrapped, body, uint64(t.hdr.chunkSize))
	if err != nil {
		return nil, r.abort(t, int64(ref.index), err)
	}
	switch {
	case ref.index < t.next:
		return nil, r.abort(t, int64(ref.index), fmt.Errorf("%w: duplicate chunk (expected chunk %d)", ErrOrder, t.next))
	case ref.index > t.next:
		return nil, r.abort(t, int64(ref.index), fmt.Errorf("%w: expected chunk %d (chunks lost or reordered)", ErrOrder, t.next))
	case ref.final != (ref.index == t.chunks):
		return nil, r.abort(t, int64(ref.index), malformed("final flag %t, but the file has %d data chunks", ref.final, t.chunks))
	case uint64(len(pt)) != t.hdr.chunkLen(ref.index, t.chunks):
		return nil, r.abort(t, int64(ref.index), malformed("%d bytes, want %d", len(pt), t.hdr.chunkLen(ref.index, t.chunks)))
	}
	if _, err := t.file.Write(pt); err != nil {
		return nil, r.abort(t, int64(ref.index), err)
	}
	t.got += uint64(len(pt))
	t.next++
	if r.opts.Progress != nil {
		r.opts.Progress(t.hdr.name, int64(t.got), int64(t.hdr.size))
	}
	if !ref.final {
		return nil, nil
	}
	if t.got != t.hdr.size { // follows from the checks above; kept as the last word
		return nil, r.abort(t, int64(ref.index), malformed("received %d bytes, the header says %d", t.got, t.hdr.size))
	}
	return r.finish(ctx, t)
}

// finish makes the complete partial file durable and renames it into place.
func (r *Receiver) finish(ctx context.Context, t *transfer) (*Done, error) {
	last := int64(t.chunks)
	if r.opts.Preserve && t.hdr.mode != 0 {
		if err := t.file.Chmod(fs.FileMode(t.hdr.mode)); err != nil {
			return nil, r.abort(t, last, err)
		}
	}
	if err := t.file.Sync(); err != nil {
		return nil, r.abort(t, last, err)
	}
	err := t.file.Close()
	t.file = nil
	if err != nil {
		return nil, r.abort(t, last, err)
	}
	var mtime time.Time
	if t.hdr.mtime != 0 {
		mtime = time.Unix(0, t.hdr.mtime)
	}
	if r.opts.Preserve && !mtime.IsZero() {
		if err := r.root.Chtimes(t.tmp, mtime, mtime); err != nil {
			return nil, r.abort(t, last, err)
		}
	}
	if err := r.install(t.tmp, t.hdr.name); err != nil {
		return nil, r.abort(t, last, err)
	}
	// Make the rename durable too; the file is in place either way.
	if d, err := r.root.Open("."); err == nil {
		if err := d.Sync(); err != nil {
			r.log.WarnContext(ctx, "filestream: syncing the destination directory", "transfer", t.id.String(), "error", err)
		}
		d.Close()
	}
	delete(r.open, t.id)
	r.remember(t.id, ending{completed: true, name: t.hdr.name})
	r.log.InfoContext(ctx, "filestream: received file", "transfer", t.id.String(), "size", t.hdr.size, "chunks", t.chunks+1)
	return &Done{
		TransferID: t.id.String(), Name: t.hdr.name, Path: filepath.Join(r.dir, t.hdr.name),
		Size: int64(t.hdr.size), Mode: fs.FileMode(t.hdr.mode), ModTime: mtime, Chunks: int64(t.chunks + 1),
	}, nil
}

// install moves the partial file tmp to name. Without Overwrite it links then removes, so
// that a file created at name meanwhile is never replaced.
func (r *Receiver) install(tmp, name string) error {
	if r.opts.Overwrite {
		return r.root.Rename(tmp, name)
	}
	err := r.root.Link(tmp, name)
	switch {
	case err == nil:
		return r.root.Remove(tmp)
	case errors.Is(err, fs.ErrExist):
		return ErrExists
	}
	// No hard links on this file system: check, then rename. Only a file created at
	// name between the two calls could be replaced.
	if _, err := r.root.Lstat(name); err == nil {
		return ErrExists
	}
	return r.root.Rename(tmp, name)
}

func (r *Receiver) createPartial() (*os.File, string, error) {
	for range 100 {
		var b [8]byte
		rand.Read(b[:])
		name := partialPrefix + hex.EncodeToString(b[:])
		f, err := r.root.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		return f, name, err
	}
	return nil, "", errors.New("filestream: cannot create a partial file")
}

// notOpen reports a data chunk of a transfer that is not in progress.
func (r *Receiver) notOpen(ref chunkRef) error {
	if e, ok := r.ended[ref.id]; ok {
		return &TransferError{ID: ref.id.String(), Name: e.name, Index: int64(ref.index), Err: fmt.Errorf("%w (%v)", ErrAborted, kindOf(e.reason))}
	}
	return &TransferError{ID: ref.id.String(), Index: int64(ref.index), Err: ErrUnknownTransfer}
}

// fail reports err for a chunk of transfer id, aborting the transfer if it is in progress.
func (r *Receiver) fail(id transferID, index int64, err error) error {
	if t := r.open[id]; t != nil {
		return r.abort(t, index, err)
	}
	// Not in progress: remember the failure, so that the transfer's later chunks are
	// reported as aborted rather than unknown, unless it completed already.
	e, ok := r.ended[id]
	if ok && e.completed {
		return &TransferError{ID: id.String(), Name: e.name, Index: index, Err: err}
	}
	r.remember(id, ending{name: e.name, reason: err})
	r.log.Warn("filestream: chunk refused", "transfer", id.String(), "chunk", index, "error", kindOf(err))
	return &TransferError{ID: id.String(), Name: e.name, Index: index, Err: err}
}

// abort ends transfer t with err: its partial file is removed.
func (r *Receiver) abort(t *transfer, index int64, err error) error {
	r.discard(t)
	r.remember(t.id, ending{name: t.hdr.name, reason: err})
	r.log.Warn("filestream: transfer failed", "transfer", t.id.String(), "chunk", index, "error", kindOf(err))
	return &TransferError{ID: t.id.String(), Name: t.hdr.name, Index: index, Err: err}
}

// discard closes and removes t's partial file, drops the chunks held for it and forgets t.
func (r *Receiver) discard(t *transfer) {
	r.buffered -= len(t.early)
	t.early = nil
	if t.file != nil {
		t.file.Close()
		t.file = nil
	}
	if t.tmp == "" { // opened by a data chunk (Unordered): no partial file yet
		delete(r.open, t.id)
		return
	}
	if err := r.root.Remove(t.tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		r.log.Error("filestream: removing a partial file", "transfer", t.id.String(), "file", t.tmp, "error", err)
	}
	delete(r.open, t.id)
}

// evict aborts the transfer that has waited longest for its next chunk.
func (r *Receiver) evict(ctx context.Context) {
	var oldest *transfer
	for _, t := range r.open {
		if oldest == nil || t.last.Before(oldest.last) {
			oldest = t
		}
	}
	if oldest != nil {
		r.log.WarnContext(ctx, "filestream: too many open transfers, aborting the least recent", "transfer", oldest.id.String())
		r.abort(oldest, -1, fmt.Errorf("%w: evicted by a new transfer (MaxOpenTransfers %d)", ErrIncomplete, r.opts.MaxOpenTransfers))
	}
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

// Expire aborts the transfers that received no chunk for idle or longer, removes their
// partial files and returns an error (ErrIncomplete) for each, joined. Call it now and
// then when senders may die mid-transfer.
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
	return errors.Join(errs...)
}

// Close aborts the transfers in progress, removes their partial files and returns an
// error (ErrIncomplete) for each, joined. The Receiver cannot be used afterwards.
func (r *Receiver) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil
	}
	var errs []error
	for _, t := range r.open {
		errs = append(errs, r.abort(t, -1, r.incomplete(t, "receiver closed")))
	}
	r.closed = true
	if err := r.root.Close(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (r *Receiver) incomplete(t *transfer, why string) error {
	if !t.started {
		return fmt.Errorf("%w: %s before chunk 0, with %d data chunks held", ErrIncomplete, why, len(t.early))
	}
	if r.opts.Unordered {
		return fmt.Errorf("%w: %s after %d of %d chunks (%d of %d bytes)", ErrIncomplete, why, t.count+1, t.chunks+1, t.got, t.hdr.size)
	}
	return fmt.Errorf("%w: %s after %d of %d chunks (%d of %d bytes)", ErrIncomplete, why, t.next, t.chunks+1, t.got, t.hdr.size)
}

// kindOf names the kind of a transfer failure for log lines.
func kindOf(err error) string {
	for _, k := range []error{ErrMalformed, ErrAuth, ErrOrder, ErrUnknownTransfer, ErrAborted, ErrIncomplete, ErrUnsafeName, ErrExists, ErrBufferFull} {
		if errors.Is(err, k) {
			return k.Error()
		}
	}
	if err == nil {
		return ""
	}
	return err.Error()
}
