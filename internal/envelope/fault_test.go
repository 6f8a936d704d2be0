package envelope

import (
	"errors"
	"testing"

	"github.com/pubcrypt/pubcrypt/fault"
)

// TestErrorClasses: what the message does wrong is a message fault; what the keyring or
// the caller's code hands Seal (key ID, wrapped key, AEAD) is not, though it is
// ErrInvalidInput too.
func TestErrorClasses(t *testing.T) {
	for _, err := range []error{ErrNoEnvelope, ErrMalformed, ErrAuth, ErrInvalidInput} {
		if c := fault.ClassOf(err); c != fault.Message {
			t.Errorf("%v: class %v, want message", err, c)
		}
	}
	aead := newAEAD(testKey("classes"))
	ok := SealInput{AEAD: aead, KeyID: "k", Wrapped: "vault:v1:AAAA", Body: []byte("b")}
	for _, tc := range []struct {
		name string
		edit func(*SealInput)
		want fault.Class
	}{
		{"reserved metadata key", func(in *SealInput) { in.Metadata = map[string]string{"pubcrypt-x": "1"} }, fault.Message},
		{"metadata not UTF-8", func(in *SealInput) { in.Metadata = map[string]string{"k": "\xff"} }, fault.Message},
		{"bad key ID", func(in *SealInput) { in.KeyID = "a/b" }, fault.Environment},
		{"bad wrapped key", func(in *SealInput) { in.Wrapped = "" }, fault.Environment},
		{"nil AEAD", func(in *SealInput) { in.AEAD = nil }, fault.Environment},
	} {
		in := ok
		tc.edit(&in)
		_, _, err := Seal(in)
		if !errors.Is(err, ErrInvalidInput) || fault.ClassOf(err) != tc.want {
			t.Errorf("%s: %v (class %v), want ErrInvalidInput of class %v", tc.name, err, fault.ClassOf(err), tc.want)
		}
	}
	if _, err := Parse(map[string]string{"a": "b"}); !errors.Is(err, ErrNoEnvelope) || !fault.IsMessage(err) {
		t.Errorf("Parse without envelope: %v", err)
	}
}
