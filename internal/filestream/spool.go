package filestream

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"os"
	"strings"
	"time"

	"github.com/pubcrypt/pubcrypt/internal/wire"
)

// The spool: a transfer's partial state in the destination directory, one file per
// transfer named partialPrefix + the transfer ID (docs/FILES.md, section 11). It holds the
// chunks as they were received, ciphertext, each authenticated before it was written:
//
//	spool    = magic || transfer_id || lp(kid) || lp(wrapped) || *record
//	magic    = "pubcrypt-spool/v1\n"
//	record   = u64be(index) || u8(final) || u32be(len(body)) || body
//
// Records are appended in the order the chunks arrived, each made durable before its
// message is acknowledged. Everything needed to go on after a restart is there: the
// wrapped data key (the keyring unwraps it again; no plaintext key is ever written) and
// the chunks themselves, chunk 0 (the encrypted header) included. Nothing in it is
// trusted: on loading, every record is authenticated again under the transfer's key, and
// the first that does not authenticate (a write torn by a crash) ends the spool there.

const (
	spoolMagic   = "pubcrypt-spool/v1\n"
	recHeaderLen = 8 + 1 + 4
	// maxPreamble is the longest preamble: magic, ID, the longest key ID and wrapped key.
	maxPreamble = len(spoolMagic) + idSize + 4 + wire.MaxKeyIDLen + 4 + wire.MaxValueLen

	// Names in the destination directory, all with the reserved prefix (a received file
	// never has it, section 6): the spool of a transfer is partialPrefix + its ID (22
	// characters); these are not IDs.
	journalSuffix = "received" // the record of completed transfers (journal.go)
	probeSuffix   = "probe"    // NewReceiver's check that the directory is writable
	tmpSuffix     = ".tmp"     // after an ID: a file being assembled where O_TMPFILE is missing
)

func spoolName(id transferID) string { return partialPrefix + id.String() }

func tmpName(id transferID) string { return partialPrefix + id.String() + tmpSuffix }

// errNoUnnamed: the platform or file system has no unnamed files (O_TMPFILE).
var errNoUnnamed = errors.New("unnamed temporary files not supported")

// errBadSpool: a spool file that is not one (torn at creation, or not written by this
// version).
var errBadSpool = errors.New("not a pubcrypt spool")

func appendPreamble(b []byte, id transferID, kid, wrapped string) []byte {
	b = append(b, spoolMagic...)
	b = append(b, id[:]...)
	b = wire.AppendString(b, kid)
	return wire.AppendString(b, wrapped)
}

func appendRecordHeader(b []byte, index uint64, final bool, n int) []byte {
	b = binary.BigEndian.AppendUint64(b, index)
	f := byte(0)
	if final {
		f = 1
	}
	b = append(b, f)
	return binary.BigEndian.AppendUint32(b, uint32(n))
}

// preamble is what a spool says of its transfer.
type preamble struct {
	id           transferID
	kid, wrapped string
	len          int64 // bytes: where the first record starts
}

// readPreamble reads and checks the preamble of spool f.
func readPreamble(f io.ReaderAt) (preamble, error) {
	var p preamble
	buf := make([]byte, maxPreamble)
	n, err := f.ReadAt(buf, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return p, err
	}
	b, ok := strings.CutPrefix(string(buf[:n]), spoolMagic)
	if !ok || len(b) < idSize {
		return p, errBadSpool
	}
	copy(p.id[:], b)
	b = b[idSize:]
	if p.kid, b, ok = cutString(b, wire.MaxKeyIDLen); !ok {
		return p, errBadSpool
	}
	if p.wrapped, b, ok = cutString(b, wire.MaxValueLen); !ok {
		return p, errBadSpool
	}
	p.len = int64(n - len(b))
	return p, nil
}

func cutString(b string, max int) (s, rest string, ok bool) {
	if len(b) < 4 {
		return "", b, false
	}
	n := binary.BigEndian.Uint32([]byte(b[:4]))
	if n == 0 || n > uint32(max) || uint32(len(b)-4) < n {
		return "", b, false
	}
	return b[4 : 4+n], b[4+n:], true
}

// record is one record's header: where it is, and what its chunk says of itself (not
// authenticated until its body is opened).
type record struct {
	index uint64
	final bool
	off   int64 // of the record header
	n     int64 // body length
}

func (r record) next() int64 { return r.off + recHeaderLen + r.n }

// readRecord reads the header of the record at off. io.EOF means the spool ends exactly
// there; errTorn, that what is there is not a whole record.
func readRecord(f io.ReaderAt, off, size int64) (record, error) {
	if off == size {
		return record{}, io.EOF
	}
	var h [recHeaderLen]byte
	if _, err := f.ReadAt(h[:], off); err != nil {
		if errors.Is(err, io.EOF) {
			return record{}, errTorn
		}
		return record{}, err
	}
	r := record{index: binary.BigEndian.Uint64(h[:]), final: h[8] == 1, off: off, n: int64(binary.BigEndian.Uint32(h[9:]))}
	if h[8] > 1 || r.index > MaxChunks || r.n < wire.TagSize || r.n > MaxChunkSize+wire.TagSize || r.next() > size {
		return record{}, errTorn
	}
	return r, nil
}

var errTorn = errors.New("torn record")

// spoolSummary is what a spool's framing says without the key: how many chunks it holds
// and whether they make a whole transfer (chunk 0, and 1 … n with n flagged final). Only
// loading the spool with the key confirms it.
type spoolSummary struct {
	pre      preamble
	records  int64
	total    int64 // messages of the transfer (n + 1), 0 while the final chunk is missing
	complete bool
	size     int64
	modified time.Time // of the spool file, or of the last chunk
}

// summarize reads the framing of spool f, of size bytes.
func summarize(f io.ReaderAt, size int64) (spoolSummary, error) {
	pre, err := readPreamble(f)
	if err != nil {
		return spoolSummary{}, err
	}
	s := spoolSummary{pre: pre, size: size}
	var seen chunkSet
	var header bool
	for off := pre.len; ; {
		r, err := readRecord(f, off, size)
		if errors.Is(err, io.EOF) || errors.Is(err, errTorn) {
			break
		}
		if err != nil {
			return s, err
		}
		off = r.next()
		switch {
		case r.index == 0:
			header = true
		case !seen.has(r.index):
			seen.set(r.index)
			s.records++
			if r.final {
				s.total = int64(r.index) + 1
			}
		}
	}
	if header {
		s.records++
	}
	s.complete = header && s.total > 0 && seen.count == uint64(s.total-1) && seen.max == uint64(s.total-1)
	return s, nil
}

// chunkSet is a set of data chunk indices (1 … MaxChunks) whose memory follows what was
// stored, never how large the indices are. An index is authentic only under the data key
// (a producer holding one may send any index up to MaxChunks before the header says how
// many there are), and in a spool read back from disk not even that (summarize reads the
// framing only); a dense bitmap grown up to the largest index cost 32 MiB per transfer
// for one far chunk. The set is paged: pages of pageBits indices, made when one of their
// indices is first set. A transfer's chunks come mostly in order and fill page after
// page (about 1.6 bits per chunk); a lone far index costs one page. At worst (each chunk
// stored alone in its page) that is about 100 bytes per chunk stored, and never more than
// MaxChunks/pageBits pages (about 50 MiB, for a transfer that stored 2^19 chunks).
type chunkSet struct {
	pages map[uint64]*chunkPage // by (index-1)/pageBits
	count uint64                // members
	max   uint64                // largest member
}

const pageBits = 512 // a 64-byte page

type chunkPage [pageBits / 64]uint64

func (s *chunkSet) has(i uint64) bool {
	p := s.pages[(i-1)/pageBits]
	return p != nil && p[(i-1)%pageBits/64]&(1<<((i-1)%64)) != 0
}

func (s *chunkSet) set(i uint64) {
	k := (i - 1) / pageBits
	p := s.pages[k]
	if p == nil {
		if s.pages == nil {
			s.pages = make(map[uint64]*chunkPage)
		}
		p = new(chunkPage)
		s.pages[k] = p
	}
	w, bit := &p[(i-1)%pageBits/64], uint64(1)<<((i-1)%64)
	if *w&bit == 0 {
		*w |= bit
		s.count++
		s.max = max(s.max, i)
	}
}

// firstMissing is the smallest index ≥ 1 not in s. It looks at the full pages from the
// start and the first one that is not, so at most count/pageBits + 1 of them.
func (s *chunkSet) firstMissing() uint64 {
	for k := uint64(0); ; k++ {
		p := s.pages[k]
		if p == nil {
			return k*pageBits + 1
		}
		for w, v := range p {
			if v != ^uint64(0) {
				return k*pageBits + uint64(w)*64 + uint64(bits.TrailingZeros64(^v)) + 1
			}
		}
	}
}

// openSpool opens an existing spool for reading or writing.
func (r *Receiver) openSpool(id transferID, flag int) (*os.File, error) {
	return r.root.OpenFile(spoolName(id), flag, 0)
}

func spoolErr(op string, id transferID, err error) error {
	return storage(fmt.Sprintf("%s partial state %s", op, spoolName(id)), err)
}
