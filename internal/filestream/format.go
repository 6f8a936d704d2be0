package filestream

import (
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/pubcrypt/pubcrypt/internal/wire"
)

// The pieces of the file format (docs/FILES.md).
const (
	// ChunkKey is the metadata key that marks a message as a file chunk.
	ChunkKey = "pubcrypt-file"
	// DEKKey is the metadata key of the wrapped data key, as in the envelope format.
	DEKKey = "pubcrypt-dek"

	adLabel = "pubcrypt-file/v1\x00"

	valueVersion = "v1"
	idField      = "v1;id="
	indexField   = ";i="
	finalField   = ";f="
	kidField     = ";kid="

	idSize      = 16
	idTextLen   = 22 // base64url of 16 bytes, no padding
	maxIndexLen = 9  // decimal digits of MaxChunks

	headerFixed = 8 + 4 + 4 + 8 + 4 // size, chunk size, mode, mtime, name length
	maxNameLen  = 255
	headerLen   = headerFixed + maxNameLen // every header, the name padded with zeros

	partialPrefix = ".pubcrypt-partial-"
)

// Limits of format v1.
const (
	// DefaultChunkSize is the plaintext bytes per chunk when SendOptions.ChunkSize is 0:
	// a message stays far below Kafka's default limit of 1 MiB.
	DefaultChunkSize = 512 << 10
	// MaxChunkSize is the largest chunk size the format allows.
	MaxChunkSize = 16 << 20
	// MaxFileSize is the largest file the format carries (1 TiB). With MaxChunks it
	// bounds what one data key encrypts (docs/FILES.md, "Usage bounds").
	MaxFileSize = 1 << 40
	// MaxChunks is the most data chunks one file may have (2^28); the chunk size must be
	// at least size/MaxChunks.
	MaxChunks = 1 << 28
	// MaxOverhead bounds what a chunk message adds to its plaintext: the GCM tag and the
	// metadata entries, keys and values (a PartitionKey entry included).
	MaxOverhead = 2048
)

// transferID is the 16 random bytes that name one transfer.
type transferID [idSize]byte

func (id transferID) String() string { return base64.RawURLEncoding.EncodeToString(id[:]) }

// chunkRef is the parsed value of the pubcrypt-file entry.
type chunkRef struct {
	id    transferID
	index uint64
	final bool
	kid   string
}

// formatRef builds the value of the pubcrypt-file entry. kid must be valid.
func formatRef(id transferID, index uint64, final bool, kid string) string {
	f := "0"
	if final {
		f = "1"
	}
	return idField + id.String() + indexField + strconv.FormatUint(index, 10) + finalField + f + kidField + kid
}

// parseRef reads a pubcrypt-file value. It accepts exactly the strings formatRef
// produces. When the value is malformed but names a transfer, the ID is still returned
// (ok reports it) so that the error can name the transfer.
func parseRef(v string) (ref chunkRef, idOK bool, err error) {
	if len(v) > wire.MaxValueLen {
		return ref, false, malformed("%s value longer than %d bytes", ChunkKey, wire.MaxValueLen)
	}
	if ver, _, _ := strings.Cut(v, ";"); ver != valueVersion {
		return ref, false, malformed("%s value: unsupported version (want %q)", ChunkKey, valueVersion)
	}
	rest, ok := strings.CutPrefix(v, idField)
	if !ok || len(rest) < idTextLen {
		return ref, false, malformed("%s value: want id= and a %d-character transfer ID after the version", ChunkKey, idTextLen)
	}
	if !decodeID(&ref.id, rest[:idTextLen]) {
		return ref, false, malformed("%s value: transfer ID must be %d base64url characters", ChunkKey, idTextLen)
	}
	rest = rest[idTextLen:]
	idOK = true

	rest, ok = strings.CutPrefix(rest, indexField)
	if !ok {
		return ref, true, malformed("%s value: want %q after the transfer ID", ChunkKey, indexField)
	}
	end := strings.IndexByte(rest, ';')
	if end < 0 {
		return ref, true, malformed("%s value: missing final flag", ChunkKey)
	}
	ref.index, ok = parseIndex(rest[:end])
	if !ok {
		return ref, true, malformed("%s value: index must be a decimal number 0-%d without leading zeros", ChunkKey, uint64(MaxChunks))
	}
	rest, ok = strings.CutPrefix(rest[end:], finalField)
	if !ok || len(rest) < 1 {
		return ref, true, malformed("%s value: want %q after the index", ChunkKey, finalField)
	}
	switch rest[0] {
	case '0':
	case '1':
		ref.final = true
	default:
		return ref, true, malformed("%s value: final flag must be 0 or 1", ChunkKey)
	}
	ref.kid, ok = strings.CutPrefix(rest[1:], kidField)
	if !ok || !wire.ValidKeyID(ref.kid) {
		return ref, true, malformed("%s value: want %q and 1-%d characters from [A-Za-z0-9._-] after the final flag", ChunkKey, kidField, wire.MaxKeyIDLen)
	}
	return ref, true, nil
}

// decodeID decodes the one base64url text of a transfer ID (wire.DecodeFixed).
func decodeID(id *transferID, text string) bool { return wire.DecodeFixed(id[:], text) }

func parseIndex(s string) (uint64, bool) {
	if len(s) == 0 || len(s) > maxIndexLen || (len(s) > 1 && s[0] == '0') {
		return 0, false
	}
	var n uint64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + uint64(c-'0')
	}
	return n, n <= MaxChunks
}

// appendAD appends the associated data of one chunk.
func appendAD(b []byte, id transferID, index uint64, final bool, kid, wrapped string) []byte {
	b = append(b, adLabel...)
	b = append(b, id[:]...)
	b = binary.BigEndian.AppendUint64(b, index)
	f := byte(0)
	if final {
		f = 1
	}
	b = append(b, f)
	b = wire.AppendString(b, kid)
	return wire.AppendString(b, wrapped)
}

// fileHeader is the plaintext of chunk 0.
type fileHeader struct {
	size      uint64 // bytes in the file
	chunkSize uint32 // plaintext bytes in every data chunk but the last
	mode      uint32 // permission bits (0o777 at most); 0 if unknown
	mtime     int64  // modification time, Unix nanoseconds; 0 if unknown
	name      string // base name, see checkName
}

// appendHeader appends the header: the fixed fields, the name, and zero bytes up to
// headerLen, so that the ciphertext does not show the length of the name.
func appendHeader(b []byte, h fileHeader) []byte {
	b = binary.BigEndian.AppendUint64(b, h.size)
	b = binary.BigEndian.AppendUint32(b, h.chunkSize)
	b = binary.BigEndian.AppendUint32(b, h.mode)
	b = binary.BigEndian.AppendUint64(b, uint64(h.mtime))
	b = wire.AppendString(b, h.name)
	for range maxNameLen - min(len(h.name), maxNameLen) {
		b = append(b, 0)
	}
	return b
}

// parseHeader reads the plaintext of chunk 0. The name is returned as sent even when it
// is unsafe, so that the error can show it; the caller runs checkName.
func parseHeader(pt []byte) (fileHeader, error) {
	var h fileHeader
	if len(pt) != headerLen {
		return h, malformed("file header: %d bytes, want %d", len(pt), headerLen)
	}
	h.size = binary.BigEndian.Uint64(pt)
	h.chunkSize = binary.BigEndian.Uint32(pt[8:])
	h.mode = binary.BigEndian.Uint32(pt[12:])
	h.mtime = int64(binary.BigEndian.Uint64(pt[16:]))
	nameLen := uint64(binary.BigEndian.Uint32(pt[24:]))
	switch {
	case nameLen > maxNameLen:
		return h, malformed("file header: name length %d exceeds %d", nameLen, maxNameLen)
	case !allZero(pt[headerFixed+nameLen:]):
		return h, malformed("file header: padding after the name is not zero")
	case h.size > MaxFileSize:
		return h, malformed("file header: size %d exceeds %d", h.size, uint64(MaxFileSize))
	case h.chunkSize == 0 || h.chunkSize > MaxChunkSize:
		return h, malformed("file header: chunk size %d not in 1-%d", h.chunkSize, MaxChunkSize)
	case dataChunks(h.size, h.chunkSize) > MaxChunks:
		return h, malformed("file header: more than %d chunks", uint64(MaxChunks))
	case h.mode > 0o777:
		return h, malformed("file header: mode %#o has bits other than permissions", h.mode)
	}
	h.name = string(pt[headerFixed : headerFixed+nameLen])
	return h, nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// dataChunks is the number of data chunks of a file: at least one, so that an empty file
// still has a final chunk.
func dataChunks(size uint64, chunkSize uint32) uint64 {
	if size == 0 {
		return 1
	}
	return (size-1)/uint64(chunkSize) + 1
}

// chunkLen is the plaintext length of data chunk index (1-based) of n.
func (h *fileHeader) chunkLen(index, n uint64) uint64 {
	if index < n {
		return uint64(h.chunkSize)
	}
	return h.size - (n-1)*uint64(h.chunkSize)
}

// checkName reports why name cannot be a file name in the destination directory, or nil.
// The rules are the format's (docs/FILES.md, "File name"), plus what the receiving
// platform cannot store as a plain file.
func checkName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("%w: empty", ErrUnsafeName)
	case len(name) > maxNameLen:
		return fmt.Errorf("%w: %d bytes, at most %d", ErrUnsafeName, len(name), maxNameLen)
	case !utf8.ValidString(name):
		return fmt.Errorf("%w: %q is not valid UTF-8", ErrUnsafeName, name)
	case name == "." || name == "..":
		return fmt.Errorf("%w: %q", ErrUnsafeName, name)
	case strings.HasPrefix(name, partialPrefix):
		return fmt.Errorf("%w: %q uses the prefix of partial files", ErrUnsafeName, name)
	}
	for _, r := range name {
		switch {
		case r == '/' || r == '\\':
			return fmt.Errorf("%w: %q is a path, not a base name", ErrUnsafeName, name)
		case r < 0x20 || r == 0x7f:
			return fmt.Errorf("%w: %q has a control character", ErrUnsafeName, name)
		}
	}
	if runtime.GOOS == "windows" {
		if strings.ContainsAny(name, `:*?"<>|`) || strings.HasSuffix(name, ".") || strings.HasSuffix(name, " ") {
			return fmt.Errorf("%w: %q cannot be a Windows file name", ErrUnsafeName, name)
		}
	}
	return nil
}
