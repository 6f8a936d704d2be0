package fields

import (
	"bytes"
	"encoding/json"
	"fmt"
	"testing"
)

func TestLocate(t *testing.T) {
	for _, tc := range []struct {
		name   string
		policy string
		doc    string
		want   []string // "concrete path=raw value", in document order
	}{
		{"flat", "name=transit", `{"id":1,"name":"Ann"}`, []string{`name="Ann"`}},
		{"absent", "email=transit", `{"name":"Ann"}`, nil},
		{"every type", "a=transit,b=transit,c=transit,d=transit,e=transit,f=transit,g=transit",
			`{"a":"s","b":-1.5e3,"c":true,"d":false,"e":null,"f":{"x":[1,{}]},"g":[]}`,
			[]string{`a="s"`, `b=-1.5e3`, `c=true`, `d=false`, `e=null`, `f={"x":[1,{}]}`, `g=[]`}},
		{"whitespace kept inside the value", "addr=envelope", "{ \"addr\" :\n\t{ \"city\" : \"Cork\" } , \"n\":1}",
			[]string{"addr={ \"city\" : \"Cork\" }"}},
		{"nested", "payment.card.number=fpe", `{"payment":{"card":{"number":"4111","cvv":"1"},"number":"x"},"number":"y"}`,
			[]string{`payment.card.number="4111"`}},
		{"array of objects", "items[].sku=envelope",
			`{"items":[{"sku":"A","n":1},{"n":2},{"sku":"B"}],"sku":"top"}`,
			[]string{`items[0].sku="A"`, `items[2].sku="B"`}},
		{"every element", "tags[]=transit", `{"tags":["a",{"b":1},[2],3]}`,
			[]string{`tags[0]="a"`, `tags[1]={"b":1}`, `tags[2]=[2]`, `tags[3]=3`}},
		{"nested arrays", "m[][]=transit,n[].x[].y=transit",
			`{"m":[[1,2],[],[3]],"n":[{"x":[{"y":"p"},{"z":0},{"y":"q"}]},{"x":"not an array"}]}`,
			[]string{`m[0][0]=1`, `m[0][1]=2`, `m[2][0]=3`, `n[0].x[0].y="p"`, `n[0].x[2].y="q"`}},
		{"type mismatch is no match", "a.b=transit,c[]=transit,d.e=transit",
			`{"a":"string","c":{"0":1},"d":[{"e":1}]}`, nil},
		{"escaped key", "name=transit", `{"na\u006de":"Ann","n\"ame":"x"}`, []string{`name="Ann"`}},
		{"unicode", "name=transit,city=envelope", `{"name":"Zoë \u00e9 😀","ciudad":"x","city":"Kraków"}`,
			[]string{`name="Zoë \u00e9 😀"`, `city="Kraków"`}},
		{"tricky strings", "b=transit",
			`{"a":"}]\"{[,:","b":"x\\\"y\\","c":"\\"}`,
			[]string{`b="x\\\"y\\"`}},
		{"duplicate keys", "name=transit", `{"name":"Ann","name":"Bob"}`,
			[]string{`name="Ann"`, `name="Bob"`}},
		{"top-level array", "name=transit", `[{"name":"Ann"}]`, nil},
		{"top-level scalar", "name=transit", ` "name" `, nil},
		{"empty containers", "a[].b=transit,c.d=transit", `{"a":[],"c":{}}`, nil},
		{"skipped deep value", "z=transit", `{"a":[[[[{"b":"]}"}]]]],"z":0}`, []string{`z=0`}},
		{"surrounding whitespace", "a=transit", " \n{\"a\":1}\r\n ", []string{`a=1`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !json.Valid([]byte(tc.doc)) {
				t.Fatalf("test document is not JSON")
			}
			p, err := ParsePolicy(tc.policy)
			if err != nil {
				t.Fatal(err)
			}
			c, _ := compile(p)
			ms, err := locate([]byte(tc.doc), c)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, m := range ms {
				got = append(got, m.path+"="+tc.doc[m.start:m.end])
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("got  %q\nwant %q", got, tc.want)
			}
		})
	}
}

// TestLocateInvalid feeds the scanner what json.Valid rejects: it must return an error
// or at least not panic (callers check json.Valid first).
func TestLocateInvalid(t *testing.T) {
	c, _ := compile(mustPolicy(t, "a.b=transit,c[]=transit"))
	for _, doc := range []string{
		``, `{`, `{"a"`, `{"a":`, `{"a":{"b"`, `{"a":{"b":}`, `{"c":[1,`, `{"c":[1 2]}`,
		`{"a":{"b":1} "c":2}`, `{"a" 1}`, `"unterminated`, `{"a":{"b":"x\`, `[`, `]`, `{"c":[}`,
		`{"a":1}}`, `{"a":{"b":1}}x`, `{"a":{,}}`,
	} {
		if _, err := locate([]byte(doc), c); err == nil && !json.Valid([]byte(doc)) {
			t.Errorf("locate(%q): no error for invalid JSON", doc)
		}
	}
}

func TestSplice(t *testing.T) {
	doc := []byte(`{"a" : "x", "b":[1, 2 ], "c":"z"}`)
	c, _ := compile(mustPolicy(t, "a=transit,b[]=transit"))
	ms, err := locate(doc, c)
	if err != nil {
		t.Fatal(err)
	}
	got := splice(doc, ms, [][]byte{[]byte(`"AAA"`), []byte(`"B"`), []byte(`"CC"`)})
	want := `{"a" : "AAA", "b":["B", "CC" ], "c":"z"}`
	if string(got) != want {
		t.Errorf("splice = %s, want %s", got, want)
	}
	if !bytes.Equal(splice(doc, nil, nil), doc) {
		t.Error("splice without matches changed the document")
	}
}
