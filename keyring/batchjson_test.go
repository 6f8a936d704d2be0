package keyring

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

// batchAnswerSeeds are answers as Vault gives them (transit encrypt and decrypt, FPE and
// transform encode, a batch with a failed item, an error without results) and the cases
// that must go to encoding/json.
var batchAnswerSeeds = []string{
	`{"request_id":"5c3e0c4a-1b2f-4a6e-9c1d-2f0b8a7e6d51","lease_id":"","renewable":false,"lease_duration":0,"data":{"batch_results":[{"ciphertext":"vault:v1:8SDd3WHDOjf7mq69CyCqYjBXAiQQAVZRkFM13ok481zoCmHnSeDX9vyf7w==","key_version":1,"reference":""},{"ciphertext":"vault:v2:abc+/=","key_version":2,"reference":""}]},"wrap_info":null,"warnings":null,"auth":null,"mount_type":"transit"}`,
	`{"data":{"batch_results":[{"plaintext":"QUJD","reference":""}]}}`,
	`{"data":{"batch_results":[{"encoded_value":"4111111111111111"},{"decoded_value":"4242"}]}}`,
	`{"data":{"batch_results":[{"ciphertext":"vault:v1:x","key_version":1},{"error":"cipher: message authentication failed","reference":""}]},"warnings":["x \"quoted\" \u00e9"]}`,
	`{"errors":["1 error occurred:\n\t* permission denied\n\n"]}`,
	`{"data":{"batch_results":[{"error":"invalid \"ciphertext\""}]}}`,
	`{"data":null}`, `{"data":{"batch_results":null}}`, `{"data":{"batch_results":[]}}`, `{}`, `null`, ``, `[]`,
	`{"Data":{"batch_results":[]}}`, `{"data":{"Batch_Results":[{"ciphertext":"a"}]}}`, `{"data":{"batch_results":[{"CipherText":"a"}]}}`,
	`{"data":{"batch_results":[{"ciphertext":"a"}]},"data":{"batch_results":[{"plaintext":"b"}]}}`,
	`{"data":{"batch_results":[{"ciphertext":"a","ciphertext":"b"}]}}`,
	`{"data":{"batch_results":[null,{"key_version":1.5},{"key_version":"1"},{"key_version":1e2},{"key_version":-0},{"key_version":0123}]}}`,
	`{"data":{"batch_results":[{"ciphertext":1}]}}`, `{"data":{"batch_results":[{"key_version":12345678901}]}}`,
	`{"data":{"batch_results":[{"ciphertext":"a"}]}} trailing`, ` {"data" : { "batch_results" : [ { "ciphertext" : "a" , "key_version" : 3 } ] } } `,
	`{"data":{"batch_results":[{"ciphertext":"a"}],"x":[1,-2.5e+3,true,false,null,{"y":"\ud83d\ude00\/"}]}}`,
	`{"data":{"batch_results":[{"ciphertext":"a"}],"x":"\x"}}`, `{"data":{"batch_results":[{"ciphertext":"é"}]}}`,
	`{"data":{"batch_results":[{"ciphertext":"a"}]`, `{"data":{"batch_results":[{"ciphertext":"a"},]}}`, `{"x":01}`, `{"x":-}`, `{"x":1.}`, `{"x":"a` + "\x01" + `"}`,
}

// FuzzBatchAnswer holds readBatchAnswer to encoding/json: whenever it reads an answer, it
// must read what json.Decoder reads into the same struct.
func FuzzBatchAnswer(f *testing.F) {
	for _, s := range batchAnswerSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		got, ok := readBatchAnswer(b)
		var want batchAnswer
		err := json.NewDecoder(bytes.NewReader(b)).Decode(&want)
		if !ok {
			return
		}
		if err != nil {
			t.Fatalf("readBatchAnswer read %q, which encoding/json refuses: %v", b, err)
		}
		if !reflect.DeepEqual(got, want.Data.BatchResults) {
			t.Fatalf("readBatchAnswer(%q) = %#v, encoding/json %#v", b, got, want.Data.BatchResults)
		}
	})
}

// TestReadBatchAnswer checks that Vault's usual answers take the fast path and that the
// others (escapes, other spellings, repeats, odd numbers) are left to encoding/json.
func TestReadBatchAnswer(t *testing.T) {
	fast := map[int]int{0: 2, 1: 1, 2: 2, 3: 2, 4: 0, 6: 0, 7: 0, 8: 0, 9: 0, 17: 1, 21: 1, 22: 1, 23: 1}
	for i, s := range batchAnswerSeeds {
		got, ok := readBatchAnswer([]byte(s))
		n, want := fast[i]
		if ok != want || ok && len(got) != n {
			t.Errorf("seed %d %.60q: fast path %v with %d results, want %v with %d", i, s, ok, len(got), want, n)
		}
	}
	var a batchAnswer
	if a.fastDecode([]byte(batchAnswerSeeds[5])) {
		t.Errorf("an escaped error text took the fast path")
	}
	decodeAnswer([]byte(batchAnswerSeeds[5]), &a)
	if len(a.Data.BatchResults) != 1 || a.Data.BatchResults[0].Error != `invalid "ciphertext"` {
		t.Errorf("escaped error text decoded as %#v", a.Data.BatchResults)
	}
	big := `{"data":{"batch_results":[` + strings.Repeat(`{"ciphertext":"vault:v1:abc","key_version":1},`, 999) + `{"ciphertext":"vault:v1:abc","key_version":1}]}}`
	if got, ok := readBatchAnswer([]byte(big)); !ok || len(got) != 1000 {
		t.Errorf("1,000 results: fast path %v, %d results", ok, len(got))
	}
}

func BenchmarkBatchAnswer(b *testing.B) {
	body := []byte(`{"request_id":"5c3e0c4a","data":{"batch_results":[` + strings.Repeat(`{"ciphertext":"vault:v1:8SDd3WHDOjf7mq69CyCqYjBXAiQQAVZRkFM13ok481zoCmHnSeDX9vyf7w==","key_version":1,"reference":""},`, 999) + `{"ciphertext":"vault:v1:x","key_version":1,"reference":""}]},"mount_type":"transit"}`)
	b.Run("encoding-json", func(b *testing.B) {
		for b.Loop() {
			var a batchAnswer
			json.NewDecoder(bytes.NewReader(body)).Decode(&a)
		}
	})
	b.Run("reader", func(b *testing.B) {
		for b.Loop() {
			var a batchAnswer
			if !a.fastDecode(body) {
				b.Fatal("a usual answer left the fast path")
			}
		}
	})
}
