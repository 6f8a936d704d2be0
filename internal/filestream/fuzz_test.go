package filestream

import (
	"bytes"
	"context"
	"errors"
	"maps"
	"os"
	"strings"
	"testing"

	"github.com/pubcrypt/pubcrypt/internal/wire"
	"github.com/pubcrypt/pubcrypt/keyring"
)

// The fuzz targets of the file format. scripts/fuzz runs each for a set time; plain
// `go test` runs their seeds (and testdata/fuzz/<Target>/, if any) as unit tests.

// fixedTransfer is a transfer of 300 bytes as "fuzz.bin" in chunks of 200 (chunk 0 and
// two data chunks), the same bytes in every process: fixed data key and transfer ID.
// The fuzzing engine runs the target in worker processes of its own, so a transfer
// made at random in each would not be the one the coordinator's seeds belong to.
func fixedTransfer(t testing.TB) (kr *vectorKeyring, msgs []msg, data []byte) {
	t.Helper()
	kr = &vectorKeyring{kid: "test-kek", wrapped: "test:v1:fuzz-wrapped-key", key: bytes.Repeat([]byte{0x5a}, keyring.DataKeySize)}
	data = testData(300)
	h := fileHeader{size: uint64(len(data)), mode: 0o644, mtime: 1, name: "fuzz.bin"}
	opts := SendOptions{ChunkSize: 200}
	if err := checkSend(&h, &opts); err != nil {
		t.Fatal(err)
	}
	dk := &keyring.DataKey{Plaintext: bytes.Clone(kr.key), Wrapped: kr.wrapped, KeyID: kr.kid}
	var rec recorder
	if _, err := sendWith(context.Background(), dk, transferID{'f', 'u', 'z', 'z'}, h, bytes.NewReader(data), rec.send, opts); err != nil {
		t.Fatal(err)
	}
	if len(rec.msgs) != 3 {
		t.Fatalf("fixed transfer has %d messages, want 3", len(rec.msgs))
	}
	return kr, rec.msgs, data
}

// fuzzDir is a directory for receivers to write in: on tmpfs if there is one, because
// the Receiver syncs every chunk it stores and a disk's fsync would bound the execs.
func fuzzDir(f *testing.F) string {
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		if dir, err := os.MkdirTemp("/dev/shm", "pubcrypt-fuzz-"); err == nil {
			f.Cleanup(func() { os.RemoveAll(dir) })
			return dir
		}
	}
	return f.TempDir()
}

// FuzzHandle: one arbitrary message (metadata and body), put into a valid transfer at
// any place or in place of one of its messages, given to a fresh Receiver (ordered or
// unordered). Handle never panics, never modifies the body and fails only with a
// *TransferError; a message that is not one of the transfer's (its body and entries)
// is never accepted; the destination never holds anything but partial state, unless
// the transfer completed, and then exactly the file that was sent.
func FuzzHandle(f *testing.F) {
	kr, msgs, data := fixedTransfer(f)
	for i, m := range msgs {
		f.Add(uint8(i), m.md[ChunkKey], m.md[DEKKey], m.body, "", "")
		f.Add(uint8(i|4), m.md[ChunkKey], m.md[DEKKey], m.body, "", "") // as a redelivery
	}
	ref1, dek := msgs[1].md[ChunkKey], msgs[1].md[DEKKey]
	f.Add(uint8(1|4), ref1, dek, msgs[1].body, "pubcrypt", "v1")
	f.Add(uint8(1|4), ref1, dek, msgs[1].body, "x", "y")
	f.Add(uint8(1|4|8), ref1, dek, msgs[1].body[:20], "x", "y")
	f.Add(uint8(2|8), msgs[2].md[ChunkKey], dek, msgs[2].body, "", "")
	f.Add(uint8(1|4), strings.Replace(ref1, "i=1", "i=4294967295", 1), dek, msgs[1].body, "", "")
	f.Add(uint8(1|4), strings.Replace(ref1, "f=0", "f=1", 1), dek, msgs[1].body, "", "")
	f.Add(uint8(0|4), msgs[0].md[ChunkKey], dek+"x", msgs[0].body, "", "")
	f.Add(uint8(3), "v1;id=AAAAAAAAAAAAAAAAAAAAAA;i=0;f=0;kid=test-kek", "junk", []byte{}, "", "")
	dir := fuzzDir(f)
	ctx := context.Background()
	f.Fuzz(func(t *testing.T, sel uint8, ref, wrapped string, body []byte, k, v string) {
		if len(body) > 4<<10 {
			return
		}
		md := map[string]string{ChunkKey: ref, DEKKey: wrapped}
		if k != "" {
			md[k] = v
		}
		fuzzed := msg{body: body, md: md}
		// Genuine: one of the transfer's messages, perhaps with a metadata entry of the
		// broker's or the application's beside it (the format does not bind those).
		genuine := false
		for _, m := range msgs {
			if bytes.Equal(body, m.body) && ref == m.md[ChunkKey] && wrapped == m.md[DEKKey] &&
				md[ChunkKey] == ref && md[DEKKey] == wrapped && (k == "" || !wire.Reserved(k)) {
				genuine = true
			}
		}
		// sel: bits 0-1 where, bit 2 insert (else replace), bit 3 unordered.
		at := int(sel&3) % (len(msgs) + 1)
		var seq []msg
		fuzzedAt := at // its index in seq
		for i, m := range msgs {
			if i == at {
				seq = append(seq, fuzzed)
				if sel&4 == 0 {
					continue
				}
			}
			seq = append(seq, m.clone())
		}
		if at == len(msgs) {
			seq = append(seq, fuzzed)
		}

		sub, err := os.MkdirTemp(dir, "r")
		if err != nil {
			t.Fatal(err)
		}
		defer os.RemoveAll(sub)
		r, err := NewReceiver(kr, sub, ReceiveOptions{Unordered: sel&8 != 0})
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		var done *Done
		for i, m := range seq {
			orig, origMD := bytes.Clone(m.body), maps.Clone(m.md)
			d, err := r.Handle(ctx, m.body, m.md)
			if !bytes.Equal(m.body, orig) || !maps.Equal(m.md, origMD) {
				t.Fatal("Handle modified the message")
			}
			if err != nil {
				var te *TransferError
				if !errors.As(err, &te) {
					t.Fatalf("error %T: %v", err, err)
				}
				if d != nil {
					t.Fatal("Done with an error")
				}
			} else if i == fuzzedAt && !genuine {
				t.Fatalf("Handle accepted a message that is not the transfer's: %q %x", m.md, m.body)
			}
			if d != nil {
				done = d
			}
		}
		for _, name := range dirEntries(t, sub) {
			switch {
			case name == "fuzz.bin":
				if done == nil {
					t.Fatal("fuzz.bin installed without Done")
				}
				if got := readFile(t, sub, name); !bytes.Equal(got, data) {
					t.Fatalf("received fuzz.bin differs from what was sent (%d bytes)", len(got))
				}
			case !strings.HasPrefix(name, partialPrefix):
				t.Fatalf("destination holds %q", name)
			}
		}
		if done != nil && !genuine && at < len(msgs) && sel&4 == 0 {
			t.Fatalf("transfer completed without message %d", at)
		}
	})
}

// FuzzParse: the metadata entries and the file header parse only in canonical form:
// formatting what was read gives the same bytes; errors are ErrMalformed (or
// ErrNotChunk without the entry).
func FuzzParse(f *testing.F) {
	_, msgs, _ := fixedTransfer(f)
	for _, m := range msgs {
		f.Add(m.md[ChunkKey], m.md[DEKKey], "", appendHeader(nil, fileHeader{size: 300, chunkSize: 200, mode: 0o644, mtime: 1, name: "fuzz.bin"}))
	}
	f.Add("v1;id=AAAAAAAAAAAAAAAAAAAAAB;i=01;f=2;kid=", "w", "pubcrypt-x", make([]byte, headerLen))
	f.Add("v1;id=AAAAAAAAAAAAAAAAAAAAAA;i=268435456;f=1;kid=k", "w", "pubcrypt", []byte{})
	f.Add("v1;id=AAAAAAAAAAAAAAAAAAAAAA;i=268435457;f=1;kid=k", "w\x00", "", appendHeader(nil, fileHeader{size: MaxFileSize, chunkSize: 1, name: "a"}))
	f.Add("", "", "", appendHeader(nil, fileHeader{size: 1, chunkSize: MaxChunkSize + 1, mode: 0o1777, name: strings.Repeat("n", 255)}))
	f.Fuzz(func(t *testing.T, value, wrapped, k string, header []byte) {
		if ref, _, err := parseRef(value); err == nil {
			if got := formatRef(ref.id, ref.index, ref.final, ref.kid); got != value {
				t.Fatalf("accepted %q, canonical %q", value, got)
			}
			if ref.index > MaxChunks || !wire.ValidKeyID(ref.kid) {
				t.Fatalf("accepted %q: index %d, kid %q", value, ref.index, ref.kid)
			}
		} else if !errors.Is(err, ErrMalformed) {
			t.Fatalf("parseRef: %v", err)
		}

		md := map[string]string{ChunkKey: value, DEKKey: wrapped}
		if k != "" {
			md[k] = "x"
		}
		if ref, w, _, err := parseMessage(md); err == nil {
			if formatRef(ref.id, ref.index, ref.final, ref.kid) != md[ChunkKey] || w != md[DEKKey] || !wire.ValidValue(w) {
				t.Fatalf("parseMessage(%q) = %v %q", md, ref, w)
			}
			for key := range md {
				if wire.Reserved(key) && key != ChunkKey && key != DEKKey {
					t.Fatalf("parseMessage accepted the reserved key %q", key)
				}
			}
		} else if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrNotChunk) {
			t.Fatalf("parseMessage: %v", err)
		}

		if h, err := parseHeader(header); err == nil {
			if got := appendHeader(nil, h); !bytes.Equal(got, header) {
				t.Fatalf("accepted header %x, canonical %x", header, got)
			}
			if h.size > MaxFileSize || h.chunkSize == 0 || h.chunkSize > MaxChunkSize ||
				dataChunks(h.size, h.chunkSize) > MaxChunks || h.mode > 0o777 {
				t.Fatalf("accepted header %+v", h)
			}
		} else if !errors.Is(err, ErrMalformed) {
			t.Fatalf("parseHeader: %v", err)
		}
	})
}

// spoolOf is the spool a Receiver would have written for msgs of the fixed transfer, in
// that order.
func spoolOf(t testing.TB, kr *vectorKeyring, msgs []msg) []byte {
	t.Helper()
	b := appendPreamble(nil, transferID{'f', 'u', 'z', 'z'}, kr.kid, kr.wrapped)
	for _, m := range msgs {
		ref, _, err := parseRef(m.md[ChunkKey])
		if err != nil {
			t.Fatal(err)
		}
		b = appendRecordHeader(b, ref.index, ref.final, len(m.body))
		b = append(b, m.body...)
	}
	return b
}

// FuzzSpool: the partial state a Receiver reads back from disk is not trusted. Whatever
// the spool of the fixed transfer holds, NewReceiver (which reads its framing), Resume
// (which finishes a complete one) and the redelivery of the transfer's messages never
// panic, fail only with *TransferError values, and never install anything but the file
// that was sent. Each exec starts a Receiver on a fresh directory.
func FuzzSpool(f *testing.F) {
	kr, msgs, data := fixedTransfer(f)
	whole := spoolOf(f, kr, msgs)
	f.Add(whole, uint8(0))
	f.Add(whole, uint8(1))
	f.Add(spoolOf(f, kr, msgs[:2]), uint8(1))
	f.Add(spoolOf(f, kr, msgs[:1]), uint8(3))
	f.Add(spoolOf(f, kr, []msg{msgs[0], msgs[2], msgs[1]}), uint8(1))
	f.Add(spoolOf(f, kr, []msg{msgs[0], msgs[2], msgs[1]}), uint8(3))
	f.Add(spoolOf(f, kr, []msg{msgs[0], msgs[1], msgs[1], msgs[2]}), uint8(0))
	f.Add(spoolOf(f, kr, []msg{msgs[2], msgs[0]}), uint8(3))
	f.Add(whole[:len(whole)-1], uint8(1))
	f.Add(whole[:len(spoolMagic)+idSize+3], uint8(1))
	f.Add(append(spoolOf(f, kr, nil), appendRecordHeader(nil, MaxChunks, true, wire.TagSize)...), uint8(1))
	dir := fuzzDir(f)
	ctx := context.Background()
	name := spoolName(transferID{'f', 'u', 'z', 'z'})
	f.Fuzz(func(t *testing.T, spool []byte, sel uint8) {
		if len(spool) > 8<<10 {
			return
		}
		sub, err := os.MkdirTemp(dir, "s")
		if err != nil {
			t.Fatal(err)
		}
		defer os.RemoveAll(sub)
		if err := os.WriteFile(sub+"/"+name, spool, 0o600); err != nil {
			t.Fatal(err)
		}
		// sel: bit 0 redeliver the transfer, bit 1 unordered.
		r, err := NewReceiver(kr, sub, ReceiveOptions{Unordered: sel&2 != 0})
		if err != nil {
			t.Fatalf("NewReceiver on a spool of %d bytes: %v", len(spool), err)
		}
		defer r.Close()
		check := func(err error) {
			t.Helper()
			var te *TransferError
			for _, e := range unjoin(err) {
				if !errors.As(e, &te) {
					t.Fatalf("error %T: %v", e, e)
				}
			}
		}
		done, err := r.Resume(ctx)
		check(err)
		if sel&1 != 0 {
			for _, m := range msgs {
				d, err := r.Handle(ctx, m.body, m.md)
				check(err)
				if d != nil {
					done = append(done, d)
				}
			}
		}
		for _, n := range dirEntries(t, sub) {
			switch {
			case n == "fuzz.bin":
				if len(done) == 0 {
					t.Fatal("fuzz.bin installed without Done")
				}
				if got := readFile(t, sub, n); !bytes.Equal(got, data) {
					t.Fatalf("received fuzz.bin differs from what was sent (%d bytes)", len(got))
				}
			case !strings.HasPrefix(n, partialPrefix):
				t.Fatalf("destination holds %q", n)
			}
		}
	})
}

// unjoin returns the errors errors.Join put together, or err alone.
func unjoin(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// FuzzJournal: the record of completed transfers is read back from disk and not
// trusted either. Whatever it holds, NewReceiver starts, and the fixed transfer is
// refused as already received exactly when its ID is a whole line of the record;
// otherwise it completes, to the file that was sent.
func FuzzJournal(f *testing.F) {
	kr, msgs, data := fixedTransfer(f)
	id := transferID{'f', 'u', 'z', 'z'}.String()
	other := transferID{'o', 't', 'h', 'e', 'r'}.String()
	f.Add([]byte(id + "\n"))
	f.Add([]byte(other + "\n" + id + "\n"))
	f.Add([]byte(other + "\n" + id))
	f.Add([]byte(id + "\r\n"))
	f.Add([]byte("x" + id + "\n"))
	f.Add([]byte(strings.Repeat(other+"\n", 300)))
	f.Add([]byte{})
	dir := fuzzDir(f)
	ctx := context.Background()
	f.Fuzz(func(t *testing.T, journal []byte) {
		if len(journal) > 16<<10 {
			return
		}
		sub, err := os.MkdirTemp(dir, "j")
		if err != nil {
			t.Fatal(err)
		}
		defer os.RemoveAll(sub)
		if err := os.WriteFile(sub+"/"+journalName, journal, 0o600); err != nil {
			t.Fatal(err)
		}
		r, err := NewReceiver(kr, sub, ReceiveOptions{})
		if err != nil {
			t.Fatalf("NewReceiver on a journal of %d bytes: %v", len(journal), err)
		}
		defer r.Close()
		recorded := false
		for line := range bytes.Lines(journal) {
			recorded = recorded || string(line) == id+"\n"
		}
		var done *Done
		for i, m := range msgs {
			d, err := r.Handle(ctx, m.body, m.md)
			switch {
			case recorded && !errors.Is(err, ErrAlreadyReceived):
				t.Fatalf("chunk %d of a transfer the journal records: %v", i, err)
			case !recorded && err != nil:
				t.Fatalf("chunk %d of a transfer the journal does not record: %v", i, err)
			}
			if d != nil {
				done = d
			}
		}
		if !recorded {
			if done == nil {
				t.Fatal("transfer did not complete")
			}
			if got := readFile(t, sub, "fuzz.bin"); !bytes.Equal(got, data) {
				t.Fatalf("received fuzz.bin differs from what was sent (%d bytes)", len(got))
			}
		}
	})
}
