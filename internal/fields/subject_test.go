package fields

import (
	"errors"
	"strings"
	"testing"
)

func TestParseSubjectPolicy(t *testing.T) {
	p, err := ParsePolicy("subject=customer.id; name=transit, card_number=fpe(bin,luhn)")
	if err != nil {
		t.Fatal(err)
	}
	r, ok := p.Subject()
	if !ok || r.Subject != "customer.id" {
		t.Fatalf("Subject() = %+v, %v", r, ok)
	}
	if got, want := p.String(), "subject=customer.id;name=transit,card_number=fpe(bin,luhn)"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	if again, err := ParsePolicy(p.String()); err != nil || again.String() != p.String() {
		t.Errorf("round trip: %q, %v", again, err)
	}
	// The subject field is protected (envelope) unless a rule names it.
	c, err := compile(p)
	if err != nil {
		t.Fatal(err)
	}
	if last := c.rules[len(c.rules)-1]; last.Path != "customer.id" || last.Mode != Envelope {
		t.Errorf("compiled rules %v: want the subject path protected in envelope mode", c.rules)
	}
	kept, err := ParsePolicy("subject=customer_id; default=envelope; keep=customer_id")
	if err != nil {
		t.Fatal(err)
	}
	if c, _ := compile(kept); len(c.rules) != len(kept) {
		t.Errorf("a subject path the policy keeps got a rule added: %v", c.rules)
	}
	if p, err := ParsePolicy("subject=metadata:customer; name=envelope"); err != nil {
		t.Error(err)
	} else if c, _ := compile(p); len(c.rules) != len(p) {
		t.Errorf("a metadata subject got a rule added: %v", c.rules)
	}
}

func TestParseSubjectPolicyErrors(t *testing.T) {
	for _, s := range []string{
		"subject=; name=transit",
		"subject=items[].id; name=transit",
		"subject=**.id; name=transit",
		"subject=a..b",
		"subject=metadata:",
		"subject=metadata:pubcrypt-dek",
		"subject=a; subject=b",
		"subject=id; sku=deterministic",
		"subject=id; ssn=transform(pii/ssn)",
		"subject=id; card=fpe(bin,vault)",
	} {
		if _, err := ParsePolicy(s); !errors.Is(err, ErrPolicy) {
			t.Errorf("ParsePolicy(%q) = %v, want ErrPolicy", s, err)
		}
	}
	if err := (Policy{{Path: "a", Mode: Envelope, Subject: "x"}}).Validate(); !errors.Is(err, ErrPolicy) {
		t.Errorf("a rule with a subject that is not the option: %v", err)
	}
}

// A field named subject (an email's) is still a field: subject=MODE is a rule.
func TestSubjectFieldIsARule(t *testing.T) {
	for _, s := range []string{"subject=transit", "subject=fpe(bin)", "subject=envelope, to=transit", "to=transit, subject=envelope"} {
		p, err := ParsePolicy(s)
		if err != nil {
			t.Errorf("ParsePolicy(%q): %v", s, err)
			continue
		}
		if _, ok := p.Subject(); ok {
			t.Errorf("ParsePolicy(%q) took a rule for the subject option: %v", s, p)
		}
	}
}

func TestSubjectOf(t *testing.T) {
	path, _ := parseSubject("customer.id")
	meta, _ := parseSubject("metadata:customer")
	for _, tc := range []struct {
		src  *subjectSource
		in   Input
		want string // "" for ErrSubject
	}{
		{path, Input{Body: []byte(`{"customer":{"id":"c-17","n":1}}`)}, "c-17"},
		{path, Input{Body: []byte(`{"customer":{"id":"\u00e9t\u00e9"}}`)}, "été"},
		{path, Input{Body: []byte(`{"customer":{"id": 1234567890123456789012}}`)}, "1234567890123456789012"},
		{path, Input{Body: []byte(`{"customer":{"id":""}}`)}, ""},
		{path, Input{Body: []byte(`{"customer":{"id":null}}`)}, ""},
		{path, Input{Body: []byte(`{"customer":{"id":{"x":1}}}`)}, ""},
		{path, Input{Body: []byte(`{"customer":["id"]}`)}, ""},
		{path, Input{Body: []byte(`{"id":"c-17"}`)}, ""},
		{meta, Input{Body: []byte(`{}`), Metadata: map[string]string{"customer": "c-9"}}, "c-9"},
		{meta, Input{Body: []byte(`{}`), Metadata: map[string]string{"other": "c-9"}}, ""},
	} {
		got, err := tc.src.subjectOf(&tc.in)
		if tc.want == "" {
			if !errors.Is(err, ErrSubject) {
				t.Errorf("%s: subjectOf = %q, %v; want ErrSubject", tc.in.Body, got, err)
			}
			if err != nil && strings.Contains(err.Error(), "c-17") {
				t.Errorf("the error shows a subject: %v", err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%s: subjectOf = %q, %v; want %q", tc.in.Body, got, err, tc.want)
		}
	}
}

func TestSubjectPolicyNeedsSubjectKeys(t *testing.T) {
	p := mustPolicy(t, "subject=id; name=envelope")
	if err := NewSealer(newFakeVault(), nil, testKeys, SealerOptions{}).CheckPolicy(p); !errors.Is(err, ErrPolicy) {
		t.Errorf("CheckPolicy without Subjects: %v, want ErrPolicy", err)
	}
}
