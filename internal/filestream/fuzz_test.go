package filestream

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
)

// FuzzHandle: a Receiver given arbitrary messages (metadata and body) after a valid
// chunk 0 never panics, fails only with a *TransferError, and never puts anything but
// partial files in the destination unless a file completed. Each run touches the file
// system: use -fuzzminimizetime=2s, or minimizing a new input stalls the exec counter.
func FuzzHandle(f *testing.F) {
	kr := newTestKeyring()
	msgs, _ := sendBytes(f, kr, "fuzz.bin", testData(300), 200) // header + 2 data chunks
	for _, m := range msgs {
		f.Add(m.md[ChunkKey], m.md[DEKKey], m.body, "", "")
	}
	f.Add(msgs[1].md[ChunkKey], msgs[1].md[DEKKey], msgs[1].body, "pubcrypt", "v1")
	f.Add(msgs[1].md[ChunkKey], msgs[1].md[DEKKey], msgs[1].body[:20], "x", "y")
	f.Add(strings.Replace(msgs[1].md[ChunkKey], "i=1", "i=4294967295", 1), msgs[1].md[DEKKey], msgs[1].body, "", "")
	f.Add("v1;id=AAAAAAAAAAAAAAAAAAAAAA;i=0;f=0;kid=test-kek", "junk", []byte{}, "", "")
	dir := f.TempDir()
	r, err := NewReceiver(kr, dir, ReceiveOptions{Overwrite: true, MaxOpenTransfers: 4})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, ref, dek string, body []byte, k, v string) {
		ctx := context.Background()
		if _, err := r.Handle(ctx, msgs[0].body, msgs[0].md); err != nil && !errors.Is(err, ErrAlreadyReceived) { // (re)start
			t.Fatalf("valid chunk 0: %v", err)
		}
		md := map[string]string{ChunkKey: ref, DEKKey: dek}
		if k != "" {
			md[k] = v
		}
		orig := bytes.Clone(body)
		done, err := r.Handle(ctx, body, md)
		if !bytes.Equal(body, orig) {
			t.Fatal("Handle modified the body")
		}
		if err != nil {
			var te *TransferError
			if !errors.As(err, &te) {
				t.Fatalf("error %T: %v", err, err)
			}
			if done != nil {
				t.Fatal("Done with an error")
			}
			return
		}
		if done != nil {
			return
		}
		for _, name := range dirEntries(t, dir) {
			if !strings.HasPrefix(name, partialPrefix) && name != "fuzz.bin" {
				t.Fatalf("destination holds %q", name)
			}
		}
	})
}

// FuzzParse: the metadata value and the file header parse only in canonical form:
// formatting what was read gives the same bytes.
func FuzzParse(f *testing.F) {
	kr := newTestKeyring()
	msgs, _ := sendBytes(f, kr, "fuzz.bin", testData(300), 200)
	f.Add(msgs[0].md[ChunkKey], appendHeader(nil, fileHeader{size: 300, chunkSize: 200, mode: 0o644, mtime: 1, name: "fuzz.bin"}))
	f.Add(msgs[2].md[ChunkKey], []byte{})
	f.Add("v1;id=AAAAAAAAAAAAAAAAAAAAAB;i=01;f=2;kid=", make([]byte, headerLen))
	f.Fuzz(func(t *testing.T, value string, header []byte) {
		if ref, _, err := parseRef(value); err == nil {
			if got := formatRef(ref.id, ref.index, ref.final, ref.kid); got != value {
				t.Fatalf("accepted %q, canonical %q", value, got)
			}
		} else if !errors.Is(err, ErrMalformed) {
			t.Fatalf("parseRef: %v", err)
		}
		if h, err := parseHeader(header); err == nil {
			if got := appendHeader(nil, h); !bytes.Equal(got, header) {
				t.Fatalf("accepted header %x, canonical %x", header, got)
			}
		} else if !errors.Is(err, ErrMalformed) {
			t.Fatalf("parseHeader: %v", err)
		}
	})
}
