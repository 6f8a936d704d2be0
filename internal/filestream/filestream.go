// Package filestream sends files of any size through a pub/sub broker, encrypted, as a
// sequence of messages (chunks), and reassembles them on the other side. The format,
// pubcrypt-file v1, is specified in docs/FILES.md; testdata/filestream/v1.json holds
// vectors any implementation can be checked against.
//
// Key management: every file gets its own data key from the keyring (one key-service
// call per file on each side), used for that file only. Each chunk is one message whose
// body is AES-256-GCM under that key with the chunk index as nonce, and whose associated
// data binds the transfer ID, the index and a final flag, so a receiver detects a
// changed, dropped, duplicated, reordered or foreign chunk and a truncated file. Chunk 0
// carries the file name, size, mode and time, encrypted: the broker sees a random
// transfer ID, chunk indices and sizes, never the name.
//
// The package does not know brokers. SendFile and SendReader hand each message (body and
// metadata) to a send function; a Receiver takes received messages one at a time,
// several transfers interleaved, and writes each file to a private temporary file in the
// destination directory that is renamed into place only once the whole file has been
// verified. Memory stays bounded by a few chunks whatever the file size.
//
// A Receiver requires the chunks of a transfer in order (Kafka, per partition) unless
// ReceiveOptions.Unordered is set (Google Pub/Sub, SQS standard queues): chunks are then
// accepted in any order, redeliveries ignored, and at most ReceiveOptions.MaxBuffered data
// chunks that arrive before their transfer's chunk 0 are held in memory.
package filestream

import (
	"errors"
	"fmt"
)

// Error kinds, matched with errors.Is. Errors wrap them with detail that names the
// transfer and a field, never a key or file contents.
var (
	// ErrNotChunk: the message has no pubcrypt-file entry.
	ErrNotChunk = errors.New("filestream: message is not a file chunk")
	// ErrMalformed: the chunk's metadata or the file header does not follow the format.
	ErrMalformed = errors.New("filestream: malformed chunk")
	// ErrAuth: the chunk does not authenticate for the transfer it names: it was changed,
	// or belongs to another transfer.
	ErrAuth = errors.New("filestream: chunk authentication failed")
	// ErrOrder: an authentic chunk arrived out of sequence: a duplicate, a reordered
	// chunk, or one after a gap (a chunk was lost).
	ErrOrder = errors.New("filestream: chunk out of order")
	// ErrUnknownTransfer: a chunk other than the first of a transfer this receiver has not
	// seen start (it joined mid-transfer, or chunk 0 was lost).
	ErrUnknownTransfer = errors.New("filestream: chunk of a transfer whose first chunk was not received")
	// ErrAlreadyReceived: a chunk of a transfer this receiver completed (a redelivery). Not
	// a failure: the chunk was ignored and the file is in place.
	ErrAlreadyReceived = errors.New("filestream: transfer already received")
	// ErrAborted: a chunk of a transfer that failed earlier (the first error said why).
	ErrAborted = errors.New("filestream: transfer was aborted")
	// ErrIncomplete: the transfer ended before its final chunk (Close, Expire, or evicted
	// by MaxOpenTransfers).
	ErrIncomplete = errors.New("filestream: transfer incomplete")
	// ErrBufferFull: with ReceiveOptions.Unordered, a data chunk arrived before its
	// transfer's chunk 0 while ReceiveOptions.MaxBuffered chunks were already held in
	// memory; the transfer was aborted.
	ErrBufferFull = errors.New("filestream: too many chunks held before their header")
	// ErrUnsafeName: the file name is not a plain base name (path separators, "..", control
	// characters, ...).
	ErrUnsafeName = errors.New("filestream: unsafe file name")
	// ErrExists: the destination file exists and ReceiveOptions.Overwrite is false.
	ErrExists = errors.New("filestream: destination file exists")
	// ErrSize: the sender's input was shorter or longer than the size it declared.
	ErrSize = errors.New("filestream: input size differs from the declared size")
	// ErrClosed: the Receiver was closed.
	ErrClosed = errors.New("filestream: receiver closed")
	// ErrInvalidInput: the sender was given something the format cannot carry (size,
	// chunk size, key ID, wrapped key).
	ErrInvalidInput = errors.New("filestream: invalid input")
)

// TransferError is the error for one transfer. It names the transfer by its ID (as in
// the chunk metadata) and, once chunk 0 was decrypted, by its file name.
type TransferError struct {
	// ID is the transfer ID, base64url; empty if the message named none.
	ID string
	// Name is the file name from the header; empty until chunk 0 was decrypted.
	Name string
	// Index is the chunk index the error is about, -1 if none.
	Index int64
	// Err says why; match it with errors.Is against the Err* values of this package and
	// of package keyring.
	Err error
}

func (e *TransferError) Error() string {
	msg := "message"
	if e.ID != "" {
		msg = "transfer " + e.ID
	}
	if e.Name != "" {
		msg += fmt.Sprintf(" (%q)", e.Name)
	}
	if e.Index >= 0 {
		msg += fmt.Sprintf(" chunk %d", e.Index)
	}
	return msg + ": " + e.Err.Error()
}

func (e *TransferError) Unwrap() error { return e.Err }

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrMalformed}, args...)...)
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalidInput}, args...)...)
}

// IsChunk reports whether a received message is a file chunk: its metadata has a
// pubcrypt-file entry. Use it to route messages when files share a topic with other
// messages; an envelope receiver (cryptsub) reports file chunks as malformed.
func IsChunk(md map[string]string) bool {
	_, ok := md[ChunkKey]
	return ok
}
