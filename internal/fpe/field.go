package fpe

import (
	"fmt"
	"strings"
)

// Encrypt is the construction of pubcrypt's field mode fpe (docs/FIELDS.md section 5.4):
// EncryptCard when o keeps or fixes any digit, EncryptDigits otherwise. Local FF1
// (internal/fields) and the Vault plugin (vaultplugin/fpe) both call it, so a value
// enciphered by one has the same shape rules as one enciphered by the other.
func Encrypt(c *FF1, s string, tweak []byte, o CardOptions) (string, error) {
	if o.any() {
		return EncryptCard(c, s, tweak, o)
	}
	return EncryptDigits(c, s, tweak)
}

// Decrypt inverts Encrypt under the same tweak and options.
func Decrypt(c *FF1, s string, tweak []byte, o CardOptions) (string, error) {
	if o.any() {
		return DecryptCard(c, s, tweak, o)
	}
	return DecryptDigits(c, s, tweak)
}

func (o CardOptions) any() bool { return o.KeepBIN || o.KeepLast4 || o.Luhn }

// String is the options as the policy grammar writes them: "bin,last4,luhn" in that
// order, each only when set; "" for none.
func (o CardOptions) String() string {
	var w []string
	if o.KeepBIN {
		w = append(w, "bin")
	}
	if o.KeepLast4 {
		w = append(w, "last4")
	}
	if o.Luhn {
		w = append(w, "luhn")
	}
	return strings.Join(w, ",")
}

// ParseCardOptions reads what CardOptions.String writes: comma-separated "bin", "last4",
// "luhn" in any order, each at most once; "" is none.
func ParseCardOptions(s string) (CardOptions, error) {
	var o CardOptions
	if s == "" {
		return o, nil
	}
	for _, w := range strings.Split(s, ",") {
		var f *bool
		switch w {
		case "bin":
			f = &o.KeepBIN
		case "last4":
			f = &o.KeepLast4
		case "luhn":
			f = &o.Luhn
		default:
			return CardOptions{}, fmt.Errorf("fpe: unknown card option %.20q (want bin, last4, luhn)", w)
		}
		if *f {
			return CardOptions{}, fmt.Errorf("fpe: card option %q given twice", w)
		}
		*f = true
	}
	return o, nil
}
