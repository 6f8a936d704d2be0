package fields

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParsePolicy(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Policy
		str  string // String() of the result; "" means in
	}{
		{in: "", want: nil},
		{in: "  ", want: nil, str: ""},
		{in: "name=transit", want: Policy{{Path: "name", Mode: Transit}}},
		{
			in: "name=transit,card_number=fpe(bin,luhn),items[].sku=envelope",
			want: Policy{
				{Path: "name", Mode: Transit},
				{Path: "card_number", Mode: FPE, KeepBIN: true, Luhn: true},
				{Path: "items[].sku", Mode: Envelope},
			},
		},
		{
			in:   " name = transit ,\tcard = fpe ( luhn , last4 , bin ) , email=deterministic ",
			want: Policy{{Path: "name", Mode: Transit}, {Path: "card", Mode: FPE, KeepBIN: true, KeepLast4: true, Luhn: true}, {Path: "email", Mode: Deterministic}},
			str:  "name=transit,card=fpe(bin,last4,luhn),email=deterministic",
		},
		{in: "ssn=fpe", want: Policy{{Path: "ssn", Mode: FPE}}},
		{in: "payment.card.number=fpe(last4)", want: Policy{{Path: "payment.card.number", Mode: FPE, KeepLast4: true}}},
		{in: "matrix[][]=envelope", want: Policy{{Path: "matrix[][]", Mode: Envelope}}},
		{in: "a-b_C9.x=transit", want: Policy{{Path: "a-b_C9.x", Mode: Transit}}},
		{in: "items[]=envelope", want: Policy{{Path: "items[]", Mode: Envelope}}},
		{in: "a.b=transit,a.c=envelope", want: Policy{{Path: "a.b", Mode: Transit}, {Path: "a.c", Mode: Envelope}}},
		{in: "card=fpe(vault, luhn,bin)", want: Policy{{Path: "card", Mode: FPE, KeepBIN: true, Luhn: true, InVault: true}}, str: "card=fpe(bin,luhn,vault)"},
		{in: "ssn=fpe(vault),card=fpe(bin,vault)", want: Policy{{Path: "ssn", Mode: FPE, InVault: true}, {Path: "card", Mode: FPE, KeepBIN: true, InVault: true}}},
	} {
		p, err := ParsePolicy(tc.in)
		if err != nil {
			t.Errorf("ParsePolicy(%q): %v", tc.in, err)
			continue
		}
		if !reflect.DeepEqual(p, tc.want) {
			t.Errorf("ParsePolicy(%q) = %#v, want %#v", tc.in, p, tc.want)
		}
		str := tc.str
		if str == "" {
			str = strings.TrimSpace(tc.in)
		}
		if p.String() != str {
			t.Errorf("ParsePolicy(%q).String() = %q, want %q", tc.in, p.String(), str)
		}
		if again, err := ParsePolicy(p.String()); err != nil || !reflect.DeepEqual(again, p) {
			t.Errorf("String() of %q does not parse back: %v", tc.in, err)
		}
	}
}

func TestParsePolicyErrors(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"name", "want path=mode"},
		{"a=fpe(vault),b=fpe(luhn)", "all fpe(vault) or none"},
		{"a=fpe(vault,vault)", "given twice"},
		{"a=transit(vault)", "takes no options"},
		{"name=", "unknown mode"},
		{"=transit", "empty path"},
		{"name=secret", "unknown mode"},
		{"name=Transit", "unknown mode"},
		{"name=transit,", "empty rule"},
		{",name=transit", "empty rule"},
		{"a=transit,,b=envelope", "empty rule"},
		{"na me=transit", "not allowed"},
		{"name.=transit", "empty key"},
		{".name=transit", "empty key"},
		{"a..b=transit", "empty key"},
		{"items[0].sku=transit", "not allowed"},
		{"items[.sku=transit", "want \"[]\""},
		{"items[]x=transit", "not allowed"},
		{"[]=transit", "empty key"},
		{"a/b=transit", "not allowed"},
		{"é=transit", "not allowed"},
		{"a=transit(bin)", "takes no options"},
		{"a=fpe()", "unknown fpe option"},
		{"a=fpe(bin", "want fpe(option"},
		{"a=fpe(bin))", "want fpe(option"},
		{"a=fpe(bin,bin)", "given twice"},
		{"a=fpe(cvv)", "unknown fpe option"},
		{"a=transit,a=envelope", "appears twice"},
		{"a=transit,a.b=envelope", "lies inside"},
		{"a.b=envelope,a=transit", "contains another"},
		{"items=transit,items[].sku=envelope", "lies inside"},
		{"items[]=transit,items[].sku=envelope", "lies inside"},
		{strings.Repeat("a", maxPathLen+1) + "=transit", "longer than"},
	} {
		_, err := ParsePolicy(tc.in)
		if !errors.Is(err, ErrPolicy) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParsePolicy(%q) = %v, want ErrPolicy containing %q", tc.in, err, tc.want)
		}
	}
}

func TestValidateHandBuilt(t *testing.T) {
	for _, p := range []Policy{
		{{Path: "a"}},
		{{Path: "a", Mode: 9}},
		{{Path: "a", Mode: Transit, Luhn: true}},
		{{Path: "", Mode: Transit}},
	} {
		if err := p.Validate(); !errors.Is(err, ErrPolicy) {
			t.Errorf("Validate(%#v) = %v, want ErrPolicy", p, err)
		}
	}
}

type tagItem struct {
	SKU   string  `json:"sku" pubcrypt:"deterministic"`
	Price float64 `json:"price" pubcrypt:"envelope"`
	Note  string  `json:"note,omitempty"`
}

type tagAddress struct {
	Street string `json:"street" pubcrypt:"transit"`
	City   string `json:"city"`
}

type TagAudit struct {
	Operator string `json:"operator" pubcrypt:"transit"`
}

type tagPurchase struct {
	TagAudit              // flattened: "operator"
	ID         string     `json:"id"`
	Name       string     `json:"name" pubcrypt:"transit"`
	Address    tagAddress `json:"address"`
	Billing    *tagAddress
	CardNumber string    `json:"card_number" pubcrypt:"fpe,bin,luhn"`
	Amount     float64   `json:"amount,string" pubcrypt:"transit"`
	Items      []tagItem `json:"items"`
	Batches    [][]*tagItem
	Secret     tagAddress `json:"secret" pubcrypt:"envelope"` // whole object
	Ignored    string     `json:"-" pubcrypt:"transit"`
	Tags       map[string]string
	Raw        []byte
	When       time.Time `json:"when"`
	unexported string
}

func TestPolicyOf(t *testing.T) {
	want := "operator=transit,name=transit,address.street=transit,Billing.street=transit," +
		"card_number=fpe(bin,luhn),amount=transit,items[].sku=deterministic,items[].price=envelope," +
		"Batches[][].sku=deterministic,Batches[][].price=envelope,secret=envelope"
	for _, typ := range []reflect.Type{reflect.TypeFor[tagPurchase](), reflect.TypeFor[*tagPurchase]()} {
		p, err := PolicyOf(typ)
		if err != nil {
			t.Fatalf("PolicyOf(%v): %v", typ, err)
		}
		if p.String() != want {
			t.Errorf("PolicyOf(%v) =\n%s\nwant\n%s", typ, p, want)
		}
		// The cached result is not shared with callers.
		p[0].Path = "changed"
		if again, _ := PolicyOf(typ); again.String() != want {
			t.Errorf("PolicyOf result shares memory with the cache")
		}
	}
}

type recursive struct {
	Name     string      `json:"name" pubcrypt:"transit"`
	Children []recursive `json:"children"`
}

type recursiveUntagged struct {
	Name     string               `json:"name"`
	Children []*recursiveUntagged `json:"children"`
}

type holdsRecursiveUntagged struct {
	Secret string            `json:"secret" pubcrypt:"envelope"`
	Tree   recursiveUntagged `json:"tree"`
}

type tagsInMap struct {
	ByID map[string]tagItem `json:"by_id"`
}

type fpeOnInt struct {
	Card int64 `json:"card" pubcrypt:"fpe"`
}

type badMode struct {
	Card string `json:"card" pubcrypt:"aes"`
}

type badName struct {
	Card string `json:"card number" pubcrypt:"transit"`
}

type dottedName struct {
	Card string `json:"card.number" pubcrypt:"transit"`
}

type dottedParent struct {
	Card  tagAddress `json:"billing.address"`
	Other struct {
		X string `json:"x"`
	} `json:"o.k"` // no tags below: ignored
}

type badOption struct {
	Card string `json:"card" pubcrypt:"transit,luhn"`
}

type dupName struct {
	A string `json:"X" pubcrypt:"transit"`
	X string `pubcrypt:"envelope"` // JSON name X too
}

type wholeAndPart struct {
	Addr  tagAddress `json:"addr" pubcrypt:"envelope"`
	Addr2 tagAddress `json:"addr2"`
}

func TestPolicyOfErrors(t *testing.T) {
	for _, tc := range []struct {
		typ  reflect.Type
		want string
	}{
		{reflect.TypeFor[recursive](), "contains itself"},
		{reflect.TypeFor[tagsInMap](), "below a map"},
		{reflect.TypeFor[fpeOnInt](), "fpe needs a field that encodes as a JSON string"},
		{reflect.TypeFor[badMode](), "unknown mode"},
		{reflect.TypeFor[badName](), "cannot be a path key"},
		{reflect.TypeFor[badOption](), "takes no options"},
		{reflect.TypeFor[dottedName](), "cannot be a path key"},
		{reflect.TypeFor[dottedParent](), "cannot be a path key"},
		{reflect.TypeFor[dupName](), "appears twice"},
		{reflect.TypeFor[int](), "want a struct"},
		{nil, "nil"},
	} {
		_, err := PolicyOf(tc.typ)
		if !errors.Is(err, ErrPolicy) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("PolicyOf(%v) = %v, want ErrPolicy containing %q", tc.typ, err, tc.want)
		}
	}
	p, err := PolicyOf(reflect.TypeFor[holdsRecursiveUntagged]())
	if err != nil || p.String() != "secret=envelope" {
		t.Errorf("PolicyOf(holdsRecursiveUntagged) = %v, %v", p, err)
	}
	if p, err := PolicyOf(reflect.TypeFor[wholeAndPart]()); err != nil || p.String() != "addr=envelope,addr2.street=transit" {
		t.Errorf("PolicyOf(wholeAndPart) = %v, %v", p, err)
	}
}
