package keyring

import (
	"context"
	"errors"
	"strings"
	"testing"
)

func newTransform(t *testing.T, opts TransformOptions) *Transform {
	t.Helper()
	if opts.Client == nil {
		c, err := dev.Client()
		if err != nil {
			t.Fatal(err)
		}
		opts.Client = c
	}
	tr, err := NewTransform(opts)
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

// TestTransformNotAvailable runs against the open-source dev server, which has no
// transform engine: every entry point must say so, in words an operator can act on.
func TestTransformNotAvailable(t *testing.T) {
	ctx := context.Background()
	tr := newTransform(t, TransformOptions{Role: "payments", Transformation: "card-number"})
	tweak := []byte("7 bytes")
	for _, tc := range []struct {
		name string
		do   func() error
	}{
		{"enable", func() error { return tr.Enable(ctx) }},
		{"check", func() error { return tr.Check(ctx) }},
		{"encode", func() error {
			_, err := tr.EncodeBatch(ctx, []string{"4111-1111-1111-1111"}, [][]byte{tweak})
			return err
		}},
		{"decode", func() error { _, err := tr.DecodeBatch(ctx, []string{"4111-1111-1111-1111"}, nil); return err }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := tr.Calls()
			err := tc.do()
			var ve *VaultError
			if !errors.Is(err, ErrTransformNotAvailable) || !errors.As(err, &ve) {
				t.Fatalf("error = %v, want ErrTransformNotAvailable with Vault's answer", err)
			}
			t.Logf("Vault answered HTTP %d %q", ve.StatusCode, ve.Errors)
			t.Logf("error: %v", err)
			if n := tr.Calls() - before; n != 1 {
				t.Errorf("%d calls, want 1", n)
			}
			msg := err.Error()
			if !strings.Contains(msg, "Vault Enterprise") || !strings.Contains(msg, "use mode fpe instead") {
				t.Errorf("message does not tell what to do: %q", msg)
			}
			if strings.Contains(msg, dev.Token) || strings.Contains(msg, "4111") {
				t.Errorf("message contains a secret: %q", msg)
			}
		})
	}

	// Another mount path is not available either, and says so the same way.
	other := newTransform(t, TransformOptions{Mount: "adp/transform", Role: "payments"})
	if err := other.Check(ctx); !errors.Is(err, ErrTransformNotAvailable) {
		t.Errorf("check on adp/transform: %v", err)
	}
}

func TestTransformLocalChecks(t *testing.T) {
	ctx := context.Background()
	tr := newTransform(t, TransformOptions{Role: "payments"})
	for _, tc := range []struct {
		name   string
		values []string
		tweaks [][]byte
	}{
		{"tweak of 8 bytes", []string{"1234"}, [][]byte{[]byte("8 bytes!")}},
		{"fewer tweaks than values", []string{"1234", "5678"}, [][]byte{[]byte("7 bytes")}},
	} {
		if _, err := tr.EncodeBatch(ctx, tc.values, tc.tweaks); !errors.Is(err, ErrInvalidInput) {
			t.Errorf("%s: %v, want ErrInvalidInput", tc.name, err)
		}
	}
	if out, err := tr.EncodeBatch(ctx, nil, nil); out != nil || err != nil {
		t.Errorf("empty batch: %v, %v", out, err)
	}
	if n := tr.Calls(); n != 0 {
		t.Errorf("local checks made %d calls", n)
	}
}

func TestNewTransformOptions(t *testing.T) {
	for _, tc := range []struct {
		opts      TransformOptions
		wantMount string
		errHas    string
	}{
		{TransformOptions{Role: "r"}, "transform", ""},
		{TransformOptions{Role: "r", Mount: "/adp/transform/", Transformation: "ccn"}, "adp/transform", ""},
		{TransformOptions{}, "", "Role is required"},
		{TransformOptions{Role: "a/b"}, "", "not a valid role name"},
		{TransformOptions{Role: "r", Transformation: "../x"}, "", "not a valid transformation"},
		{TransformOptions{Role: "r", Mount: "../sys"}, "", "not a valid mount"},
		{TransformOptions{Role: "r", Timeout: -1}, "", "negative"},
	} {
		tr, err := NewTransform(tc.opts)
		switch {
		case tc.errHas == "" && err != nil:
			t.Errorf("NewTransform(%+v): %v", tc.opts, err)
		case tc.errHas == "" && tr.v.mount != tc.wantMount:
			t.Errorf("NewTransform(%+v): mount %q, want %q", tc.opts, tr.v.mount, tc.wantMount)
		case tc.errHas != "" && (err == nil || !strings.Contains(err.Error(), tc.errHas)):
			t.Errorf("NewTransform(%+v) error = %v, want one containing %q", tc.opts, err, tc.errHas)
		}
	}
}
