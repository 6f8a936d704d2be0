package filestream

import (
	"context"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/pubcrypt/pubcrypt/internal/wire"
	"github.com/pubcrypt/pubcrypt/keyring"
)

// SendOptions configure SendFile and SendReader. The zero value is useful.
type SendOptions struct {
	// ChunkSize is the plaintext bytes per message, 1 to MaxChunkSize; 0 means
	// DefaultChunkSize. A message is at most ChunkSize + MaxOverhead bytes of body and
	// metadata: derive it from the broker's limit.
	ChunkSize int
	// Logger receives one line per transfer (transfer ID, size, chunks; never the name);
	// nil discards them.
	Logger *slog.Logger
	// Progress, if set, is called after each data chunk was sent with the bytes of the
	// file sent so far and the file size.
	Progress func(sent, total int64)
	// PartitionKey, if set, names one more metadata entry, set to the transfer ID on
	// every chunk, so that a broker that partitions by a metadata entry (kafkapubsub's
	// TopicOptions.KeyName) keeps a transfer on one partition, hence in order. It must be
	// 1-64 printable ASCII bytes and not start with "pubcrypt". The receiver ignores it.
	PartitionKey string
}

// SendFunc sends one message. body is only valid until SendFunc returns (the sender
// reuses it for the next chunk): a SendFunc that queues the message must copy it. md is
// the message's own map.
type SendFunc func(ctx context.Context, body []byte, md map[string]string) error

// Stats describe one transfer, as far as it went.
type Stats struct {
	// TransferID names the transfer in the chunk metadata and in receiver errors.
	TransferID string
	// Size is the file size in bytes.
	Size int64
	// Messages is the number of messages sent, the header chunk included.
	Messages int64
	// Bytes is the total body size of the messages sent (ciphertext and tags).
	Bytes int64
}

// SendFile encrypts the regular file at path with a data key of its own and sends it as
// chunk messages through send. The receiver gets the file's base name, size, permission
// bits and modification time. The file must not change size while it is sent.
func SendFile(ctx context.Context, kr keyring.Keyring, path string, send SendFunc, opts SendOptions) (Stats, error) {
	f, err := os.Open(path)
	if err != nil {
		return Stats{}, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return Stats{}, err
	}
	if !st.Mode().IsRegular() {
		return Stats{}, invalid("%s is not a regular file", path)
	}
	h := fileHeader{
		name:  filepath.Base(path),
		size:  uint64(st.Size()),
		mode:  uint32(st.Mode().Perm()),
		mtime: unixNano(st.ModTime()),
	}
	return sendReader(ctx, kr, h, f, send, opts)
}

// SendReader encrypts size bytes read from r with a data key of its own and sends them as
// a file named name (a base name: no path). It reads r in chunks and never holds more
// than one. If r ends early or has more than size bytes, it fails with ErrSize before the
// final chunk is sent, so the receiver never completes the file.
func SendReader(ctx context.Context, kr keyring.Keyring, name string, size int64, r io.Reader, send SendFunc, opts SendOptions) (Stats, error) {
	if size < 0 {
		return Stats{}, invalid("negative size %d", size)
	}
	return sendReader(ctx, kr, fileHeader{name: name, size: uint64(size)}, r, send, opts)
}

func sendReader(ctx context.Context, kr keyring.Keyring, h fileHeader, r io.Reader, send SendFunc, opts SendOptions) (Stats, error) {
	if err := checkSend(&h, &opts); err != nil {
		return Stats{}, err
	}
	dk, err := kr.GenerateDataKey(ctx)
	if err != nil {
		return Stats{}, fmt.Errorf("filestream: data key for a file: %w", err)
	}
	// The key encrypts this file only; nothing needs the raw key once the AEAD exists.
	defer clear(dk.Plaintext)
	var id transferID
	if _, err := rand.Read(id[:]); err != nil {
		return Stats{}, err
	}
	return sendWith(ctx, dk, id, h, r, send, opts)
}

// checkSend validates what the sender was given, before it asks the key service for
// anything, and fills in the defaults.
func checkSend(h *fileHeader, opts *SendOptions) error {
	if opts.ChunkSize == 0 {
		opts.ChunkSize = DefaultChunkSize
	}
	if opts.ChunkSize < 0 || opts.ChunkSize > MaxChunkSize {
		return invalid("chunk size %d not in 1-%d", opts.ChunkSize, MaxChunkSize)
	}
	h.chunkSize = uint32(opts.ChunkSize)
	if err := checkName(h.name); err != nil {
		return err
	}
	if h.size > MaxFileSize {
		return invalid("file of %d bytes exceeds the format's %d", h.size, uint64(MaxFileSize))
	}
	if n := dataChunks(h.size, h.chunkSize); n > MaxChunks {
		return invalid("file of %d bytes would take %d chunks of %d bytes, more than %d", h.size, n, h.chunkSize, uint64(MaxChunks))
	}
	if k := opts.PartitionKey; k != "" && (wire.Reserved(k) || len(k) > 64 || !wire.ValidValue(k)) {
		return invalid("partition key must be 1-64 bytes of printable ASCII not starting with %q", wire.ReservedPrefix)
	}
	return nil
}

// chunkSealer encrypts the chunks of one transfer.
type chunkSealer struct {
	aead         cipher.AEAD
	id           transferID
	kid, wrapped string
	ad           []byte // reused
}

func (s *chunkSealer) seal(dst []byte, index uint64, final bool, pt []byte) []byte {
	nonce := wire.Nonce(index)
	s.ad = appendAD(s.ad[:0], s.id, index, final, s.kid, s.wrapped)
	return s.aead.Seal(dst, nonce[:], pt, s.ad)
}

func (s *chunkSealer) metadata(index uint64, final bool, partitionKey string) map[string]string {
	md := make(map[string]string, 3)
	md[ChunkKey] = formatRef(s.id, index, final, s.kid)
	md[DEKKey] = s.wrapped
	if partitionKey != "" {
		md[partitionKey] = s.id.String()
	}
	return md
}

// sendWith sends one file under data key dk as transfer id. h and opts are checked.
func sendWith(ctx context.Context, dk *keyring.DataKey, id transferID, h fileHeader, r io.Reader, send SendFunc, opts SendOptions) (stats Stats, err error) {
	stats = Stats{TransferID: id.String(), Size: int64(h.size)}
	fail := func(index int64, err error) (Stats, error) {
		return stats, &TransferError{ID: stats.TransferID, Name: h.name, Index: index, Err: err}
	}
	if !wire.ValidKeyID(dk.KeyID) {
		return fail(-1, invalid("key ID must be 1-%d characters from [A-Za-z0-9._-]", wire.MaxKeyIDLen))
	}
	if !wire.ValidValue(dk.Wrapped) {
		return fail(-1, invalid("wrapped data key must be 1-%d bytes of printable ASCII", wire.MaxValueLen))
	}
	aead, err := dk.AEAD()
	if err != nil {
		return fail(-1, invalid("data key: %v", err))
	}
	s := &chunkSealer{aead: aead, id: id, kid: dk.KeyID, wrapped: dk.Wrapped}
	n := dataChunks(h.size, h.chunkSize)
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log.DebugContext(ctx, "filestream: sending file", "transfer", stats.TransferID, "size", h.size, "chunks", n+1)

	// One buffer holds a chunk and then its ciphertext, sealed in place.
	bufLen := max(min(uint64(h.chunkSize), h.size), headerLen) + wire.TagSize
	buf := make([]byte, bufLen)
	emit := func(index uint64, final bool, pt []byte) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		body := s.seal(buf[:0], index, final, pt)
		if err := send(ctx, body, s.metadata(index, final, opts.PartitionKey)); err != nil {
			return err
		}
		stats.Messages++
		stats.Bytes += int64(len(body))
		return nil
	}

	hdr := appendHeader(buf[:0], h)
	if err := emit(0, false, hdr); err != nil {
		return fail(0, err)
	}
	var sent uint64
	for i := uint64(1); i <= n; i++ {
		m := h.chunkLen(i, n)
		if got, err := io.ReadFull(r, buf[:m]); err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				err = fmt.Errorf("%w: input ended after %d of %d bytes", ErrSize, sent+uint64(got), h.size)
			}
			return fail(int64(i), err)
		}
		final := i == n
		if final {
			// Refuse to complete a file whose input goes on: the receiver would accept
			// a prefix of it as the whole.
			var probe [1]byte
			switch _, err := io.ReadFull(r, probe[:]); {
			case err == nil:
				return fail(int64(i), fmt.Errorf("%w: input longer than %d bytes", ErrSize, h.size))
			case !errors.Is(err, io.EOF):
				return fail(int64(i), err)
			}
		}
		if err := emit(i, final, buf[:m]); err != nil {
			return fail(int64(i), err)
		}
		sent += m
		if opts.Progress != nil {
			opts.Progress(int64(sent), int64(h.size))
		}
	}
	log.DebugContext(ctx, "filestream: sent file", "transfer", stats.TransferID, "messages", stats.Messages, "bytes", stats.Bytes)
	return stats, nil
}

// unixNano is t in Unix nanoseconds, or 0 (unknown) if t is zero or out of int64's range.
func unixNano(t time.Time) int64 {
	if t.IsZero() || t.Year() < 1678 || t.Year() > 2261 {
		return 0
	}
	return t.UnixNano()
}
