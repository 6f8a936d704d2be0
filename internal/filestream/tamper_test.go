package filestream

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/pubcrypt/pubcrypt/internal/envelope"
)

// expectFailed checks the outcome of a transfer that must not complete: no Done, some
// error (from Handle, or from Expire when the messages run out with the transfer still in
// progress) names transfer id, and dir is then empty: no file, no partial state. It
// returns the errors that name the transfer.
func expectFailed(t *testing.T, kr *testKeyring, id string, msgs []msg) []error {
	t.Helper()
	return expectFailedWith(t, kr, ReceiveOptions{}, id, msgs)
}

// expectFailedWith is expectFailed with a receiver configured by opts.
func expectFailedWith(t *testing.T, kr *testKeyring, opts ReceiveOptions, id string, msgs []msg) []error {
	t.Helper()
	dir := t.TempDir()
	r, err := NewReceiver(kr, dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	done, errs := deliver(t, r, msgs)
	if err := r.Expire(0); err != nil { // give up what is still in progress
		errs = append(errs, err)
	}
	if err := r.Close(); err != nil {
		errs = append(errs, err)
	}
	if len(done) != 0 {
		t.Fatalf("transfer completed: %+v", done[0])
	}
	if got := dirEntries(t, dir); len(got) != 0 {
		t.Fatalf("destination holds %q", got)
	}
	var named []error
	for _, err := range errs {
		if strings.Contains(err.Error(), "transfer "+id) {
			named = append(named, err)
		}
	}
	if len(named) == 0 {
		t.Fatalf("no error names transfer %s: %v", id, errs)
	}
	return named
}

func TestTamper(t *testing.T) {
	kr := newTestKeyring()
	msgs, st := sendBytes(t, kr, "secret.txt", testData(1000), 200) // header + 5 data chunks
	other, _ := sendBytes(t, kr, "other.txt", testData(1000), 200)
	last := len(msgs) - 1

	with := func(f func(m []msg) []msg) []msg {
		m := make([]msg, len(msgs))
		for i := range msgs {
			m[i] = msgs[i].clone()
		}
		return f(m)
	}
	cases := []struct {
		name string
		msgs []msg
		kind error // of the first error naming the transfer
	}{
		{"drop middle chunk", with(func(m []msg) []msg { return slices.Delete(m, 3, 4) }), ErrOrder},
		{"drop last chunk", with(func(m []msg) []msg { return m[:last] }), ErrIncomplete},
		{"drop chunk 0", with(func(m []msg) []msg { return m[1:] }), ErrUnknownTransfer},
		// A chunk delivered again with the same bytes is a redelivery, accepted
		// (TestRedelivery); with other bytes at the same index, it does not authenticate.
		{"duplicate middle chunk altered", with(func(m []msg) []msg {
			d := m[2].clone()
			d.body[len(d.body)/2] ^= 1
			return slices.Insert(m, 3, d)
		}), ErrAuth},
		{"duplicate chunk before the last altered", with(func(m []msg) []msg {
			d := m[last-1].clone()
			d.body[0] ^= 0x80
			return slices.Insert(m, last, d)
		}), ErrAuth},
		{"duplicate chunk 0 altered", with(func(m []msg) []msg {
			d := m[0].clone()
			d.body[5] ^= 2
			return slices.Insert(m, 2, d)
		}), ErrAuth},
		{"chunk of another file at an index already received", with(func(m []msg) []msg {
			d := other[1].clone()
			d.md[ChunkKey], d.md[DEKKey] = m[1].md[ChunkKey], m[1].md[DEKKey]
			return slices.Insert(m, 3, d)
		}), ErrAuth},
		{"swap two chunks", with(func(m []msg) []msg { m[2], m[3] = m[3], m[2]; return m }), ErrOrder},
		{"swap last two chunks", with(func(m []msg) []msg { m[last-1], m[last] = m[last], m[last-1]; return m }), ErrOrder},
		{"chunk of another file, same index", with(func(m []msg) []msg { m[2] = other[2]; return m }), ErrOrder},
		{"chunk of another file relabelled", with(func(m []msg) []msg {
			m[2] = other[2].clone()
			m[2].md[ChunkKey] = msgs[2].md[ChunkKey]
			return m
		}), ErrAuth},
		{"chunk of another file relabelled with this key", with(func(m []msg) []msg {
			m[2] = other[2].clone()
			m[2].md[ChunkKey] = msgs[2].md[ChunkKey]
			m[2].md[DEKKey] = msgs[2].md[DEKKey]
			return m
		}), ErrAuth},
		{"header of another file relabelled with this key", with(func(m []msg) []msg {
			m[0] = other[0].clone()
			m[0].md[ChunkKey] = msgs[0].md[ChunkKey]
			m[0].md[DEKKey] = msgs[0].md[DEKKey]
			return m
		}), ErrAuth},
		{"truncated body", with(func(m []msg) []msg { m[2].body = m[2].body[:len(m[2].body)-1]; return m }), ErrAuth},
		{"final flag on a middle chunk", with(func(m []msg) []msg {
			m[2].md[ChunkKey] = strings.Replace(m[2].md[ChunkKey], ";f=0", ";f=1", 1)
			return m
		}), ErrAuth},
		{"final flag removed", with(func(m []msg) []msg {
			m[last].md[ChunkKey] = strings.Replace(m[last].md[ChunkKey], ";f=1", ";f=0", 1)
			return m
		}), ErrAuth},
		{"extra reserved entry", with(func(m []msg) []msg { m[2].md["pubcrypt"] = "v1"; return m }), ErrMalformed},
		{"dek entry removed", with(func(m []msg) []msg { delete(m[2].md, DEKKey); return m }), ErrMalformed},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			named := expectFailed(t, kr, st.TransferID, c.msgs)
			if !errors.Is(named[0], c.kind) {
				t.Fatalf("first error %v, want %v", named[0], c.kind)
			}
		})
	}

	// One changed byte anywhere in a body, and every possible one-byte change position in
	// each metadata value, of the header, a middle and the last chunk.
	for _, i := range []int{0, 2, last} {
		for pos := range len(msgs[i].body) {
			if pos%7 != 0 && pos != len(msgs[i].body)-1 { // a sample of positions: bodies are long
				continue
			}
			t.Run(fmt.Sprintf("body of chunk %d byte %d", i, pos), func(t *testing.T) {
				m := with(func(m []msg) []msg { m[i].body[pos] ^= 0x40; return m })
				named := expectFailed(t, kr, st.TransferID, m)
				if !errors.Is(named[0], ErrAuth) {
					t.Fatalf("first error %v, want ErrAuth", named[0])
				}
			})
		}
		for _, key := range []string{ChunkKey, DEKKey} {
			for pos := range len(msgs[i].md[key]) {
				t.Run(fmt.Sprintf("%s of chunk %d byte %d", key, i, pos), func(t *testing.T) {
					m := with(func(m []msg) []msg {
						v := []byte(m[i].md[key])
						v[pos] = changeByte(v[pos])
						m[i].md[key] = string(v)
						return m
					})
					expectFailed(t, kr, st.TransferID, m)
				})
			}
		}
	}
}

// changeByte returns another printable ASCII byte, so that the change reaches the
// parser and the authentication rather than only the printable check.
func changeByte(c byte) byte {
	if c2 := c ^ 1; c2 >= 0x20 && c2 < 0x7f {
		return c2
	}
	return 'A'
}

func TestNames(t *testing.T) {
	kr := newTestKeyring()
	unsafe := []string{
		"", ".", "..", "../x", "/etc/passwd", "a/b", `a\b`, "x/..", "a\x00b", "a\nb", "tab\there", "del\x7f",
		"\xff\xfe", ".pubcrypt-partial-1234", strings.Repeat("n", 256),
	}
	tooLong := unsafe[len(unsafe)-1]
	t.Run("sender refuses", func(t *testing.T) {
		for _, name := range unsafe {
			_, err := SendReader(context.Background(), kr, name, 1, strings.NewReader("x"), (&recorder{}).send, SendOptions{})
			if !errors.Is(err, ErrUnsafeName) {
				t.Errorf("SendReader(%q): %v, want ErrUnsafeName", name, err)
			}
		}
		if n := kr.gens.Load(); n != 0 {
			t.Errorf("%d key service calls for refused names", n)
		}
	})
	t.Run("receiver refuses", func(t *testing.T) {
		parent := t.TempDir()
		dir := filepath.Join(parent, "dest")
		os.Mkdir(dir, 0o700)
		for i, name := range unsafe {
			// A sender that does not check: seal the name as it is.
			var rec recorder
			dk, _ := kr.GenerateDataKey(context.Background())
			h := fileHeader{name: name, size: 1, chunkSize: 100}
			if _, err := sendWith(context.Background(), dk, transferID{byte(i)}, h, strings.NewReader("x"), rec.send, SendOptions{}); err != nil {
				t.Fatal(err)
			}
			r := newReceiver(t, kr, dir, ReceiveOptions{Overwrite: true})
			done, errs := deliver(t, r, rec.msgs)
			r.Close() // one Receiver at a time in a directory: the next name gets a new one
			kind := ErrUnsafeName
			if name == tooLong {
				kind = ErrMalformed // the header is longer than the format allows
			}
			if len(done) != 0 || len(errs) != 2 || !errors.Is(errs[0], kind) || !errors.Is(errs[1], ErrAborted) {
				t.Errorf("name %q: done %v, errors %v", name, done, errs)
			}
			if got := dirEntries(t, dir); len(got) != 0 {
				t.Errorf("name %q: destination holds %q", name, got)
			}
			if got := dirEntries(t, parent); !slices.Equal(got, []string{"dest"}) {
				t.Errorf("name %q: parent holds %q", name, got)
			}
		}
	})
	t.Run("accepted", func(t *testing.T) {
		for _, name := range []string{"a", "...", "..a", ".hidden", "with space", "ünïcødé 東京 🔐", strings.Repeat("n", 255), "a:b"} {
			msgs, _ := sendBytes(t, kr, name, []byte("x"), 0)
			dir := t.TempDir()
			r := newReceiver(t, kr, dir, ReceiveOptions{})
			if done, errs := deliver(t, r, msgs); len(done) != 1 || len(errs) != 0 {
				t.Errorf("name %q: done %v, errors %v", name, done, errs)
			}
			if got := dirEntries(t, dir); !slices.Equal(got, []string{name}) {
				t.Errorf("name %q: destination holds %q", name, got)
			}
		}
	})
}

// TestErrorsHoldNoSecrets: error strings carry the transfer ID and file name, never the
// contents or the key.
func TestErrorsHoldNoSecrets(t *testing.T) {
	kr := newTestKeyring()
	data := []byte(strings.Repeat("TOP-SECRET-CONTENT ", 100))
	msgs, _ := sendBytes(t, kr, "n.txt", data, 500)
	msgs[2] = msgs[2].clone()
	msgs[2].body[0] ^= 1
	r := newReceiver(t, kr, t.TempDir(), ReceiveOptions{})
	_, errs := deliver(t, r, msgs)
	if len(errs) == 0 {
		t.Fatal("no error")
	}
	for _, err := range errs {
		if s := err.Error(); strings.Contains(s, "SECRET") || strings.Contains(s, msgs[0].md[DEKKey]) || !strings.Contains(s, `"n.txt"`) {
			t.Errorf("error %q", s)
		}
	}
}

// TestEnvelopeRefusesChunks: a file chunk that reaches an envelope receiver (cryptsub) is
// malformed there, never mistaken for a plaintext message.
func TestEnvelopeRefusesChunks(t *testing.T) {
	msgs, _ := sendBytes(t, newTestKeyring(), "f", []byte("x"), 0)
	for _, m := range msgs {
		if _, err := envelope.Parse(m.md); !errors.Is(err, envelope.ErrMalformed) {
			t.Fatalf("envelope.Parse(%q): %v, want ErrMalformed", m.md, err)
		}
	}
	if IsChunk(map[string]string{"pubcrypt": "v1;alg=A256GCM;kid=k;n=AAAAAAAAAAAAAAAA"}) {
		t.Fatal("an envelope message is a chunk")
	}
}
