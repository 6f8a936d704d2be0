package crypttopic

import "testing"

// TestRecordKeyFromURL: which URLs name a record key, how it travels, and what the driver
// is given: key_field and record_key are crypttopic's and never reach it.
func TestRecordKeyFromURL(t *testing.T) {
	for _, c := range []struct {
		in, driver string
		rk         RecordKey
		err        bool
	}{
		{in: "kgo://t", driver: "kgo://t"},
		{in: "mem://t?key_name=user", driver: "mem://t?key_name=user"},
		{in: "kgo://t?key_name=user", driver: "kgo://t?key_name=user", rk: RecordKey{Entry: "user"}},
		{in: "kafka://t?key_name=user&record_key=clear", driver: "kafka://t?key_name=user", rk: RecordKey{Entry: "user", Mode: RecordKeyClear}},
		{in: "kgo://t?key_name=user&record_key=deterministic&partitioner=record", driver: "kgo://t?key_name=user&partitioner=record", rk: RecordKey{Entry: "user", Mode: RecordKeyDeterministic}},
		{in: "kgo://t?key_name=user&key_field=user.id", driver: "kgo://t?key_name=user", rk: RecordKey{Entry: "user", Field: "user.id"}},
		{in: "kgo://t?key_field=user.id", err: true},
		{in: "kgo://t?record_key=clear", err: true},
		{in: "kgo://t?key_name=user&record_key=plain", err: true},
		{in: "kgo://t?key_name=a&key_name=b", err: true},
	} {
		driver, rk, err := RecordKeyFromURL(c.in)
		if (err != nil) != c.err {
			t.Errorf("%s: error %v, want one: %t", c.in, err, c.err)
			continue
		}
		if err == nil && (driver != c.driver || rk != c.rk) {
			t.Errorf("%s: %q %+v, want %q %+v", c.in, driver, rk, c.driver, c.rk)
		}
	}
}
