package fields

import (
	"encoding"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
)

// policyCache memoizes PolicyOf per type, as encoding/json does for its encoders: the
// result depends on the type alone, so the cache is invisible except in speed.
var policyCache sync.Map // reflect.Type → policyResult

type policyResult struct {
	p   Policy
	err error
}

// PolicyOf reads a policy from the struct tags of t (a struct or a pointer to one):
//
//	type Purchase struct {
//		Name       string `json:"name" pubcrypt:"transit"`
//		CardNumber string `json:"card_number" pubcrypt:"fpe,bin,luhn"`
//		Items      []Item `json:"items"` // Item's tags give items[].sku, ...
//	}
//
// The tag is a mode (transit, envelope, deterministic, fpe), then for fpe the options
// bin, last4, luhn, vault. Paths use the JSON names encoding/json would write: the json tag's
// name, else the Go field name; fields tagged json:"-" and unexported fields are left
// out; embedded structs without a json name are flattened. A tagged field is protected
// whole, whatever its type. Untagged fields are searched for tags: structs and pointers
// add a key, slices and arrays "[]". Tags below a map, an interface or a recursive
// type cannot be expressed as paths and are an error, as is an fpe tag on a field that
// does not encode as a JSON string.
func PolicyOf(t reflect.Type) (Policy, error) {
	if t == nil {
		return nil, fmt.Errorf("%w: PolicyOf(nil)", ErrPolicy)
	}
	if r, ok := policyCache.Load(t); ok {
		res := r.(policyResult)
		return slices.Clone(res.p), res.err
	}
	p, err := policyOf(t)
	policyCache.Store(t, policyResult{p, err})
	return slices.Clone(p), err
}

func policyOf(t reflect.Type) (Policy, error) {
	st := t
	for st.Kind() == reflect.Pointer {
		st = st.Elem()
	}
	if st.Kind() != reflect.Struct {
		return nil, fmt.Errorf("%w: PolicyOf(%v): want a struct type", ErrPolicy, t)
	}
	w := &tagWalker{onStack: map[reflect.Type]bool{}}
	if err := w.structFields(st, ""); err != nil {
		return nil, fmt.Errorf("%w: %v: %w", ErrPolicy, t, err)
	}
	if err := w.p.Validate(); err != nil {
		return nil, fmt.Errorf("%v: %w", t, err)
	}
	return w.p, nil
}

type tagWalker struct {
	p       Policy
	onStack map[reflect.Type]bool
}

func (w *tagWalker) structFields(t reflect.Type, prefix string) error {
	if w.onStack[t] {
		if hasTags(t, map[reflect.Type]bool{}) {
			return fmt.Errorf("type %v contains itself: tags below it have no finite paths", t)
		}
		return nil
	}
	w.onStack[t] = true
	defer delete(w.onStack, t)
	for i := range t.NumField() {
		f := t.Field(i)
		jsonTag := f.Tag.Get("json")
		if jsonTag == "-" {
			continue
		}
		name, _, _ := strings.Cut(jsonTag, ",")
		tag, tagged := f.Tag.Lookup("pubcrypt")
		ft := deref(f.Type)
		if f.Anonymous && name == "" && ft.Kind() == reflect.Struct {
			if tagged {
				return fmt.Errorf("field %s: a pubcrypt tag on an embedded struct needs a json name", f.Name)
			}
			if err := w.structFields(ft, prefix); err != nil {
				return err
			}
			continue
		}
		if !f.IsExported() {
			if tagged {
				return fmt.Errorf("field %s: pubcrypt tag on an unexported field", f.Name)
			}
			continue
		}
		if name == "" {
			name = f.Name
		}
		if !validName(name) {
			// A "." or "[" in a JSON name would read as path syntax and protect some
			// other value: refuse it wherever a tag depends on it.
			if tagged || hasTags(f.Type, map[reflect.Type]bool{}) {
				return fmt.Errorf("field %s: JSON name %q cannot be a path key (want [A-Za-z0-9_-])", f.Name, name)
			}
			continue
		}
		path := prefix + name
		if !tagged {
			if err := w.search(f.Type, path); err != nil {
				return err
			}
			continue
		}
		r, err := parseTag(path, tag)
		if err != nil {
			return fmt.Errorf("field %s: %w", f.Name, err)
		}
		if (r.Mode == FPE || r.Mode == Transform) && !encodesAsString(f.Type) {
			return fmt.Errorf("field %s: %s needs a field that encodes as a JSON string, not %v", f.Name, r.Mode, f.Type)
		}
		w.p = append(w.p, r)
	}
	return nil
}

// search looks for tags in the type of an untagged field at path.
func (w *tagWalker) search(t reflect.Type, path string) error {
	t = deref(t)
	switch t.Kind() {
	case reflect.Struct:
		if implementsMarshaler(t) {
			return nil // encodes itself: its fields are not its JSON
		}
		return w.structFields(t, path+".")
	case reflect.Slice, reflect.Array:
		if t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.Uint8 {
			return nil // []byte encodes as a base64 string
		}
		return w.search(t.Elem(), path+"[]")
	case reflect.Map:
		if hasTags(t.Elem(), map[reflect.Type]bool{}) {
			return fmt.Errorf("%s: pubcrypt tags below a map have no path (paths have no wildcard key)", path)
		}
	}
	return nil
}

// parseTag reads a pubcrypt tag: mode[,option...].
func parseTag(path, tag string) (Rule, error) {
	mode, opts, _ := strings.Cut(tag, ",")
	spec := mode
	if opts != "" {
		spec += "(" + opts + ")"
	}
	r, err := parseRule(path + "=" + spec)
	if err != nil {
		return Rule{}, err
	}
	return r, nil
}

func validName(s string) bool {
	for i := 0; i < len(s); i++ {
		if !nameChar(s[i]) {
			return false
		}
	}
	return s != ""
}

func deref(t reflect.Type) reflect.Type {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t
}

var (
	jsonMarshaler = reflect.TypeFor[json.Marshaler]()
	textMarshaler = reflect.TypeFor[encoding.TextMarshaler]()
)

func implementsMarshaler(t reflect.Type) bool {
	pt := reflect.PointerTo(t)
	return t.Implements(jsonMarshaler) || pt.Implements(jsonMarshaler) ||
		t.Implements(textMarshaler) || pt.Implements(textMarshaler)
}

// encodesAsString reports whether values of t can encode as a JSON string: strings, and
// types that marshal themselves (which may).
func encodesAsString(t reflect.Type) bool {
	t = deref(t)
	return t.Kind() == reflect.String || implementsMarshaler(t)
}

// hasTags reports whether a pubcrypt tag is reachable from t.
func hasTags(t reflect.Type, seen map[reflect.Type]bool) bool {
	t = deref(t)
	if seen[t] {
		return false
	}
	seen[t] = true
	switch t.Kind() {
	case reflect.Struct:
		for i := range t.NumField() {
			f := t.Field(i)
			if _, ok := f.Tag.Lookup("pubcrypt"); ok || hasTags(f.Type, seen) {
				return true
			}
		}
	case reflect.Slice, reflect.Array, reflect.Map:
		return hasTags(t.Elem(), seen)
	}
	return false
}
