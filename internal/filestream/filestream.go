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
	"fmt"

	"github.com/pubcrypt/pubcrypt/fault"
)

// Error kinds, matched with errors.Is. Errors wrap them with detail that names the
// transfer and a field, never a key or file contents.
//
// Each kind has its fault class (package fault): a fault of the message (fault.Message:
// the chunk or transfer itself is bad, trying it again never helps, so a consumer
// acknowledges it after reporting it) or of the environment (fault.Environment: the
// destination cannot be written, the Receiver is closed; the chunk must not be
// acknowledged and passes once the environment is mended). Errors of the keyring keep
// the keyring's class. fault.ClassOf(err) answers for any error Handle returns.
var (
	// ErrNotChunk: the message has no pubcrypt-file entry.
	ErrNotChunk = fault.New(fault.Message, "filestream: message is not a file chunk")
	// ErrMalformed: the chunk's metadata or the file header does not follow the format.
	ErrMalformed = fault.New(fault.Message, "filestream: malformed chunk")
	// ErrAuth: the chunk does not authenticate for the transfer it names: it was changed,
	// or belongs to another transfer.
	ErrAuth = fault.New(fault.Message, "filestream: chunk authentication failed")
	// ErrOrder: an authentic chunk arrived out of sequence: after a gap (a chunk was lost)
	// or before chunks it should follow. A chunk already received is not an error (a
	// redelivery, ignored).
	ErrOrder = fault.New(fault.Message, "filestream: chunk out of order")
	// ErrUnknownTransfer: a chunk other than the first of a transfer this receiver has not
	// seen start (it joined mid-transfer, or chunk 0 was lost) and has no partial state of.
	ErrUnknownTransfer = fault.New(fault.Message, "filestream: chunk of a transfer whose first chunk was not received")
	// ErrAlreadyReceived: a chunk of a transfer this receiver completed (a redelivery). Not
	// a failure: the chunk was ignored and the file is in place; acknowledge it.
	ErrAlreadyReceived = fault.New(fault.Message, "filestream: transfer already received")
	// ErrAborted: a chunk of a transfer that failed earlier (the first error said why).
	ErrAborted = fault.New(fault.Message, "filestream: transfer was aborted")
	// ErrIncomplete: the transfer was given up before its final chunk (Expire).
	ErrIncomplete = fault.New(fault.Message, "filestream: transfer incomplete")
	// ErrUnsafeName: the file name is not a plain base name (path separators, "..", control
	// characters, ...).
	ErrUnsafeName = fault.New(fault.Message, "filestream: unsafe file name")
	// ErrExists: the destination file exists and ReceiveOptions.Overwrite is false. A
	// fault of the message, not of the environment: a transfer replayed whole must not
	// stop the receiver (docs/FILES.md, section 12.3).
	ErrExists = fault.New(fault.Message, "filestream: destination file exists")
	// ErrStorage: the destination directory could not be read or written (unwritable,
	// read-only, full, I/O error). The error wraps the operating system's error. The
	// transfer's partial state is kept as it was before the chunk.
	ErrStorage = fault.New(fault.Environment, "filestream: destination storage failed")
	// ErrClosed: the Receiver was closed.
	ErrClosed = fault.New(fault.Environment, "filestream: receiver closed")
	// ErrSize: the sender's input was shorter or longer than the size it declared.
	ErrSize = fault.New(fault.Message, "filestream: input size differs from the declared size")
	// ErrInvalidInput: the sender was given something the format cannot carry (size,
	// chunk size, key ID, wrapped key).
	ErrInvalidInput = fault.New(fault.Message, "filestream: invalid input")
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

// storage reports a failed operation on the destination directory: an environment
// fault that wraps the operating system's error (so that errors.Is finds, say,
// syscall.ENOSPC).
func storage(op string, err error) error {
	return fmt.Errorf("%w: %s: %w", ErrStorage, op, err)
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
