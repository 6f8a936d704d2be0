package cryptsub_test

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
	"gocloud.dev/pubsub"
	"gocloud.dev/pubsub/mempubsub"

	"github.com/pubcrypt/pubcrypt/cryptsub"
	"github.com/pubcrypt/pubcrypt/crypttopic"
	"github.com/pubcrypt/pubcrypt/internal/broker"
	"github.com/pubcrypt/pubcrypt/internal/devkafka"
	"github.com/pubcrypt/pubcrypt/internal/purchase"
	"github.com/pubcrypt/pubcrypt/keyring"
)

const benchBatch = 1000 // messages per SendBatch and ReceiveBatch

// demoPolicy is the demo's field policy (cmd/pubcrypt's default for encrypt).
const demoPolicy = "name=transit,address=transit,card_number=fpe(bin,luhn),items[].sku=deterministic"

// benchPipe is one protection mode wired over an in-memory topic: an encrypting topic, a
// decrypting subscription and the keyrings of both sides (to count Vault calls).
type benchPipe struct {
	name       string
	top        *crypttopic.Topic
	sub        *cryptsub.Subscription
	send, recv *keyring.Vault
	stats
}

// stats are a mode's figures: messages through, time sending and receiving, Vault calls
// of both sides, and the CPU time the client (this process) and the Vault server used
// meanwhile (noCPU where it could not be read).
type stats struct {
	msgs                 int
	sending, elapsed     time.Duration // elapsed = sending + receiving
	sendCalls, recvCalls int64
	clientCPU, vaultCPU  time.Duration
	noCPU                bool
}

func (s *stats) rate() float64     { return float64(s.msgs) / s.elapsed.Seconds() }
func (s *stats) sendRate() float64 { return float64(s.msgs) / s.sending.Seconds() }
func (s *stats) recvRate() float64 { return float64(s.msgs) / (s.elapsed - s.sending).Seconds() }
func (s *stats) calls() float64    { return float64(s.sendCalls+s.recvCalls) / float64(s.msgs) }

// measureCPU runs f, a round trip of s's messages, and adds the CPU time the client and
// the Vault server used during it to s.
func (s *stats) measureCPU(f func()) {
	pid := vaultServer.PID()
	c0, v0, ok0 := cpuTimes(pid)
	f()
	c1, v1, ok1 := cpuTimes(pid)
	s.noCPU = s.noCPU || !ok0 || !ok1
	s.clientCPU += c1 - c0
	s.vaultCPU += v1 - v0
}

// perMsg is a CPU time per message round trip, in microseconds.
func (s *stats) perMsg(d time.Duration) float64 {
	return float64(d.Microseconds()) / float64(s.msgs)
}

func newBenchPipe(b *testing.B, name, policy string) *benchPipe {
	b.Helper()
	var p crypttopic.FieldPolicy
	if policy != "" {
		var err error
		if p, err = crypttopic.ParseFieldPolicy(policy); err != nil {
			b.Fatal(err)
		}
	}
	bp := &benchPipe{name: name, send: newVault(b, vaultServer), recv: newVault(b, vaultServer)}
	mt := mempubsub.NewTopic()
	ms := mempubsub.NewSubscription(mt, time.Minute)
	var err error
	if bp.top, err = crypttopic.New(mt, crypttopic.Options{Keyring: bp.send, Fields: p}); err != nil {
		b.Fatal(err)
	}
	if bp.sub, err = cryptsub.New(ms, cryptsub.Options{Keyring: bp.recv}); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = bp.sub.Shutdown(context.Background())
		_ = bp.top.Shutdown(context.Background())
	})
	return bp
}

// roundTrip sends n bodies in SendBatch calls of benchBatch, then receives them in
// batches of benchBatch and decrypts each batch as ReceiveBatch does (DecryptBatch), checks
// each, and adds to bp's figures. The receive time starts at the first message
// (receiveOne).
func (bp *benchPipe) roundTrip(b *testing.B, ctx context.Context, bodies [][]byte, n int) {
	bp.measureCPU(func() { bp.roundTripOnce(b, ctx, bodies, n) })
}

func (bp *benchPipe) roundTripOnce(b *testing.B, ctx context.Context, bodies [][]byte, n int) {
	send0, recv0 := bp.send.Calls(), bp.recv.Calls()
	start := time.Now()
	for sent := 0; sent < n; sent += benchBatch {
		msgs := make([]*pubsub.Message, min(benchBatch, n-sent))
		for j := range msgs {
			i := (bp.msgs + sent + j) % len(bodies)
			msgs[j] = &pubsub.Message{Body: bodies[i], Metadata: map[string]string{"i": strconv.Itoa(i)}}
		}
		if err := bp.top.SendBatch(ctx, msgs); err != nil {
			b.Fatal(err)
		}
	}
	sending := time.Since(start)
	bp.sending += sending
	sub := bp.sub.Unwrap()
	first := receiveOne(b, ctx, sub)
	start = time.Now()
	for got := 0; got < n; {
		// ReceiveBatch(benchBatch) without its linger: the messages are all there.
		msgs := make([]*pubsub.Message, 0, min(benchBatch, n-got))
		if got == 0 {
			msgs = append(msgs, first)
		}
		for len(msgs) < cap(msgs) {
			msgs = append(msgs, receiveOne(b, ctx, sub))
		}
		_, errs := bp.sub.DecryptBatch(ctx, msgs)
		for i, m := range msgs {
			if errs[i] != nil {
				b.Fatal(errs[i])
			}
			m.Ack()
			j, _ := strconv.Atoi(m.Metadata["i"])
			if !bytes.Equal(m.Body, bodies[j]) {
				b.Fatalf("%s: message %d decrypted to other bytes than were sent", bp.name, j)
			}
		}
		got += len(msgs)
	}
	bp.elapsed += sending + time.Since(start)
	bp.msgs += n
	bp.sendCalls += bp.send.Calls() - send0
	bp.recvCalls += bp.recv.Calls() - recv0
}

// receiveOne receives one message, not decrypted, from sub, an in-memory subscription.
// The receive time starts after the first message of a round: mempubsub's poll of an
// empty subscription sleeps 250 ms, and a subscription drained by the last round has such
// a poll in flight, which the first Receive of the next round waits out (a quarter of a
// second per round, or none, depending on how long the other modes took in between).
func receiveOne(b *testing.B, ctx context.Context, sub *pubsub.Subscription) *pubsub.Message {
	m, err := sub.Receive(ctx)
	if err != nil {
		b.Fatal(err)
	}
	return m
}

// BenchmarkFieldModes measures the round trip of purchases (the demo's messages) through
// each protection mode, against the real Vault dev server and over an in-memory topic, so
// that the figures are the encryption's and Vault's, not a broker's: SendBatch of 1,000,
// then batches of 1,000 received and decrypted as ReceiveBatch does (DecryptBatch), timed
// from the first message on (receiveOne). One op is 1,000 purchases through each mode,
// one mode after the other in the same run, on the same bodies:
//
//   - body: the whole body encrypted (the default): local AES-GCM under a cached data key
//   - envelope: name, address and card_number as envelope fields (local AES-GCM)
//   - transit: the same three fields by Vault Transit (batch_input)
//   - demo: the demo's policy: name and address by Transit, card_number by FPE, every
//     items[].sku deterministically
//
// and, as the baseline, the seed's design (seedPipe): one Vault call per field per
// message on each side for the fields (seed-fields, the seed's three fields by Transit),
// a fresh data key from Vault per message for the body (seed-body). Seed modes move
// fewer messages per op (they are ~100 times slower); their rates are rates all the same.
//
// Per mode: <mode>-msgs/s (round trip: messages over the time to send and to receive
// them), <mode>-send-msgs/s, <mode>-recv-msgs/s, <mode>-vault-calls/msg (both sides),
// and <mode>-ratio-vs-seed (msgs/s over the seed's for the same kind of protection).
//
// On Linux, also the CPU time per message round trip of each half, which share this
// machine's cores: <mode>-client-cpu-us/msg (this process: pubcrypt, gocloud's in-memory
// driver and the benchmark's checks) and <mode>-vault-cpu-us/msg (the Vault server and
// its FPE plugin). From the latter, <mode>-vault-ceiling-msgs/s is the round-trip rate
// Vault could serve with every core to itself and a client that cost nothing, and
// <mode>-ratio-vs-vault-ceiling is msgs/s over it: the "Vault's ceiling" of a field mode
// on this machine, and how near the shared-machine figure comes to it. CPU times are read
// in 10 ms ticks, a few percent of a mode's time per op.
func BenchmarkFieldModes(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	ps, bodies := purchases(11, 2000)
	pipes := []*benchPipe{
		newBenchPipe(b, "body", ""),
		newBenchPipe(b, "envelope", "name=envelope,address=envelope,card_number=envelope"),
		newBenchPipe(b, "transit", "name=transit,address=transit,card_number=transit"),
		newBenchPipe(b, "demo", demoPolicy),
	}
	seedFields, seedBody := newSeedPipe(b, true), newSeedPipe(b, false)
	const seedPerOp = 20
	for _, bp := range pipes { // first data keys, connections, caches
		bp.roundTrip(b, ctx, bodies, benchBatch)
		bp.stats = stats{}
	}
	seedFields.roundTrip(b, ctx, ps, seedPerOp)
	seedBody.roundTrip(b, ctx, ps, seedPerOp)
	seedFields.stats, seedBody.stats = stats{}, stats{}
	b.ResetTimer()
	for range b.N {
		for _, bp := range pipes {
			bp.roundTrip(b, ctx, bodies, benchBatch)
		}
		seedFields.roundTrip(b, ctx, ps, seedPerOp)
		seedBody.roundTrip(b, ctx, ps, seedPerOp)
	}
	b.StopTimer()

	report := func(name string, s *stats, seed *stats) {
		b.ReportMetric(s.rate(), name+"-msgs/s")
		b.ReportMetric(s.sendRate(), name+"-send-msgs/s")
		b.ReportMetric(s.recvRate(), name+"-recv-msgs/s")
		b.ReportMetric(s.calls(), name+"-vault-calls/msg")
		if !s.noCPU {
			b.ReportMetric(s.perMsg(s.clientCPU), name+"-client-cpu-us/msg")
			b.ReportMetric(s.perMsg(s.vaultCPU), name+"-vault-cpu-us/msg")
			if s.vaultCPU > 0 {
				// The round-trip rate if Vault had every core and the client cost nothing.
				ceiling := float64(runtime.NumCPU()) * 1e6 / s.perMsg(s.vaultCPU)
				b.ReportMetric(ceiling, name+"-vault-ceiling-msgs/s")
				b.ReportMetric(s.rate()/ceiling, name+"-ratio-vs-vault-ceiling")
			}
		}
		if seed != nil {
			b.ReportMetric(s.rate()/seed.rate(), name+"-ratio-vs-seed")
		}
	}
	report("body", &pipes[0].stats, &seedBody.stats)
	for _, bp := range pipes[1:] {
		report(bp.name, &bp.stats, &seedFields.stats)
	}
	report("seed-fields", &seedFields.stats, nil)
	report("seed-body", &seedBody.stats, nil)
}

// seedPipe protects purchases the way the seed's scripts did, against the same Vault and
// over an in-memory topic like benchPipe: fields=true encrypts name, address and
// card_number with one transit/encrypt call per field per message and decrypts them with
// one transit/decrypt call each; fields=false asks transit/datakey for a fresh data key
// per message, encrypts the body locally with AES-256-GCM and sends the wrapped key
// along, which the receiver unwraps with one transit/decrypt call per message.
type seedPipe struct {
	fields bool
	vault  *api.Client
	top    *pubsub.Topic
	sub    *pubsub.Subscription
	stats
}

func newSeedPipe(b *testing.B, fields bool) *seedPipe {
	c, err := vaultServer.Client()
	if err != nil {
		b.Fatal(err)
	}
	mt := mempubsub.NewTopic()
	sp := &seedPipe{fields: fields, vault: c, top: mt, sub: mempubsub.NewSubscription(mt, time.Minute)}
	b.Cleanup(func() {
		_ = sp.sub.Shutdown(context.Background())
		_ = sp.top.Shutdown(context.Background())
	})
	return sp
}

var seedFieldNames = []string{"name", "address", "card_number"}

// call writes data to a transit path and returns the answer's data.
func (sp *seedPipe) call(ctx context.Context, path string, data map[string]any) (map[string]any, error) {
	sec, err := sp.vault.Logical().WriteWithContext(ctx, "transit/"+path, data)
	if err != nil {
		return nil, err
	}
	if sec == nil {
		return nil, fmt.Errorf("transit/%s: empty answer", path)
	}
	return sec.Data, nil
}

func (sp *seedPipe) encryptField(ctx context.Context, v string) (string, error) {
	d, err := sp.call(ctx, "encrypt/"+transitKey, map[string]any{"plaintext": base64.StdEncoding.EncodeToString([]byte(v))})
	if err != nil {
		return "", err
	}
	ct, _ := d["ciphertext"].(string)
	return ct, nil
}

// decryptTransit returns the plaintext of a transit ciphertext.
func (sp *seedPipe) decryptTransit(ctx context.Context, ct string) ([]byte, error) {
	d, err := sp.call(ctx, "decrypt/"+transitKey, map[string]any{"ciphertext": ct})
	if err != nil {
		return nil, err
	}
	pt, _ := d["plaintext"].(string)
	return base64.StdEncoding.DecodeString(pt)
}

func seedGCM(b *testing.B, key []byte) cipher.AEAD {
	block, err := aes.NewCipher(key)
	if err != nil {
		b.Fatal(err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		b.Fatal(err)
	}
	return aead
}

// roundTrip sends n purchases the seed's way, then receives, decrypts and checks them.
func (sp *seedPipe) roundTrip(b *testing.B, ctx context.Context, ps []purchase.Purchase, n int) {
	sp.measureCPU(func() { sp.roundTripOnce(b, ctx, ps, n) })
}

func (sp *seedPipe) roundTripOnce(b *testing.B, ctx context.Context, ps []purchase.Purchase, n int) {
	start := time.Now()
	for j := range n {
		i := (sp.msgs + j) % len(ps)
		body, _ := json.Marshal(ps[i])
		m := &pubsub.Message{Metadata: map[string]string{"i": strconv.Itoa(i)}}
		if sp.fields {
			doc := map[string]any{}
			if err := json.Unmarshal(body, &doc); err != nil {
				b.Fatal(err)
			}
			for _, f := range seedFieldNames {
				ct, err := sp.encryptField(ctx, doc[f].(string))
				if err != nil {
					b.Fatal(err)
				}
				doc[f] = ct
				sp.sendCalls++
			}
			m.Body, _ = json.Marshal(doc)
		} else {
			d, err := sp.call(ctx, "datakey/plaintext/"+transitKey, nil)
			if err != nil {
				b.Fatal(err)
			}
			sp.sendCalls++
			pt, _ := d["plaintext"].(string)
			key, err := base64.StdEncoding.DecodeString(pt)
			if err != nil {
				b.Fatal(err)
			}
			nonce := make([]byte, 12)
			if _, err := rand.Read(nonce); err != nil {
				b.Fatal(err)
			}
			m.Body = seedGCM(b, key).Seal(nonce, nonce, body, nil)
			m.Metadata["dek"], _ = d["ciphertext"].(string)
		}
		if err := sp.top.Send(ctx, m); err != nil {
			b.Fatal(err)
		}
	}
	sending := time.Since(start)
	sp.sending += sending
	first := receiveOne(b, ctx, sp.sub) // outside the receive time, as in benchPipe
	start = time.Now()
	for k := range n {
		m := first
		if k > 0 {
			m = receiveOne(b, ctx, sp.sub)
		}
		m.Ack()
		i, _ := strconv.Atoi(m.Metadata["i"])
		if sp.fields {
			doc := map[string]any{}
			if err := json.Unmarshal(m.Body, &doc); err != nil {
				b.Fatal(err)
			}
			for _, f := range seedFieldNames {
				pt, err := sp.decryptTransit(ctx, doc[f].(string))
				if err != nil {
					b.Fatal(err)
				}
				doc[f] = string(pt)
				sp.recvCalls++
			}
			if doc["card_number"] != ps[i].CardNumber || doc["name"] != ps[i].Name {
				b.Fatalf("seed-fields: message %d decrypted to other values than were sent", i)
			}
		} else {
			key, err := sp.decryptTransit(ctx, m.Metadata["dek"])
			if err != nil {
				b.Fatal(err)
			}
			sp.recvCalls++
			body, err := seedGCM(b, key).Open(nil, m.Body[:12], m.Body[12:], nil)
			if err != nil {
				b.Fatal(err)
			}
			want, _ := json.Marshal(ps[i])
			if !bytes.Equal(body, want) {
				b.Fatalf("seed-body: message %d decrypted to other bytes than were sent", i)
			}
		}
	}
	sp.elapsed += sending + time.Since(start)
	sp.msgs += n
}

// BenchmarkRoundTripKafka sends 1 KiB bodies (whole-body encryption, SendBatch of 1,000)
// through kfake and receives them (ReceiveBatch of 1,000 on the encrypted side, Receive
// on the plain one), on kafka:// (gocloud's kafkapubsub, sarama) and kgo:// (kgopubsub,
// franz-go), encrypted and plain, all on the same broker and in the same run. One op is
// one message each way on each of the four. Reported: each side's msgs/s (round trip,
// and its send and receive phases) and the ratios kgo-vs-kafka (plain over plain) and
// encrypted-vs-plain (per driver).
func BenchmarkRoundTripKafka(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	type side struct {
		name      string
		scheme    string
		encrypted bool
		sendBatch func(context.Context, []*pubsub.Message) error
		receive   func(context.Context, int) ([]*pubsub.Message, error)
		elapsed   time.Duration
		sending   time.Duration
	}
	sides := []*side{
		{name: "kafka-plain", scheme: "kafka"},
		{name: "kafka-encrypted", scheme: "kafka", encrypted: true},
		{name: "kgo-plain", scheme: "kgo"},
		{name: "kgo-encrypted", scheme: "kgo", encrypted: true},
	}
	// BENCH_ONLY=kgo (a prefix of the side names) measures only those sides, for a CPU
	// profile of one driver or one side: go test -bench RoundTripKafka -cpuprofile.
	if only := os.Getenv("BENCH_ONLY"); only != "" {
		sides = slices.DeleteFunc(sides, func(s *side) bool { return !strings.HasPrefix(s.name, only) })
	}
	var topics []string
	for _, s := range sides {
		topics = append(topics, "bench_"+s.name)
	}
	// The broker runs in a process of its own, as a real one does: in this one, the
	// records it keeps (hundreds of MiB) would slow every garbage collection of the
	// clients measured, and the side that allocates more the most.
	kafka, err := devkafka.StartChild(devkafka.Options{Topics: topics})
	if err != nil {
		b.Fatal(err)
	}
	defer kafka.Close()
	b.Setenv("KAFKA_BROKERS", kafka.Addrs[0])

	for _, s := range sides {
		topic := "bench_" + s.name
		topURL := s.scheme + "://" + topic
		subURL := s.scheme + "://g-" + topic + "?topic=" + topic + "&offset=oldest"
		if s.encrypted {
			top, err := crypttopic.Open(ctx, topURL, crypttopic.Options{Keyring: newVault(b, vaultServer)})
			if err != nil {
				b.Fatal(err)
			}
			defer top.Shutdown(context.Background())
			sub, err := cryptsub.Open(ctx, subURL, cryptsub.Options{Keyring: newVault(b, vaultServer)})
			if err != nil {
				b.Fatal(err)
			}
			defer sub.Shutdown(context.Background())
			s.sendBatch = top.SendBatch
			s.receive = func(ctx context.Context, max int) ([]*pubsub.Message, error) {
				msgs, _, errs := sub.ReceiveBatch(ctx, max)
				for _, err := range errs {
					if err != nil {
						return nil, err
					}
				}
				return msgs, nil
			}
			continue
		}
		top, err := broker.OpenTopic(ctx, topURL)
		if err != nil {
			b.Fatal(err)
		}
		defer top.Shutdown(context.Background())
		sub, err := broker.OpenSubscription(ctx, subURL)
		if err != nil {
			b.Fatal(err)
		}
		defer sub.Shutdown(context.Background())
		s.sendBatch = func(ctx context.Context, msgs []*pubsub.Message) error {
			// As crypttopic.SendBatch sends (one ordered produce on kgo://), so that
			// encrypted ÷ plain measures the encryption, not two ways of sending.
			if ok, err := broker.SendInOrder(ctx, top, msgs); ok {
				return err
			}
			errs := make(chan error, len(msgs))
			for _, m := range msgs {
				go func() { errs <- top.Send(ctx, m) }()
			}
			for range msgs {
				if err := <-errs; err != nil {
					return err
				}
			}
			return nil
		}
		s.receive = func(ctx context.Context, _ int) ([]*pubsub.Message, error) {
			m, err := sub.Receive(ctx)
			return []*pubsub.Message{m}, err
		}
	}

	body := bytes.Repeat([]byte("0123456789abcdef"), 64)
	run := func(s *side, n int) {
		start := time.Now()
		for sent := 0; sent < n; sent += benchBatch {
			msgs := make([]*pubsub.Message, min(benchBatch, n-sent))
			for i := range msgs {
				msgs[i] = &pubsub.Message{Body: body}
			}
			if err := s.sendBatch(ctx, msgs); err != nil {
				b.Fatalf("%s: %v", s.name, err)
			}
		}
		s.sending += time.Since(start)
		for got := 0; got < n; {
			msgs, err := s.receive(ctx, min(benchBatch, n-got))
			if err != nil {
				b.Fatalf("%s: %v", s.name, err)
			}
			for _, m := range msgs {
				m.Ack()
				if !bytes.Equal(m.Body, body) {
					b.Fatalf("%s: body differs after the round trip", s.name)
				}
			}
			got += len(msgs)
		}
		s.elapsed += time.Since(start)
	}
	for _, s := range sides {
		run(s, 1) // consumer groups joined, data key fetched
		s.elapsed, s.sending = 0, 0
	}
	// Raw AES-256-GCM seal and open of the same body with fresh buffers, as a sender and
	// a receiver must: the least any codec of this cipher adds to a plain round trip.
	var gcm time.Duration
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	block, _ := aes.NewCipher(key)
	aead, _ := cipher.NewGCM(block)
	nonce := make([]byte, aead.NonceSize())
	raw := func(n int) {
		start := time.Now()
		for range n {
			ct := aead.Seal(nil, nonce, body, nil)
			if _, err := aead.Open(nil, nonce, ct, nil); err != nil {
				b.Fatal(err)
			}
		}
		gcm += time.Since(start)
	}

	b.SetBytes(int64(len(body)))
	b.ResetTimer()
	// Alternate in chunks so that drift hits all alike.
	for done := 0; done < b.N; done += 1000 {
		n := min(1000, b.N-done)
		for _, s := range sides {
			run(s, n)
		}
		b.StopTimer()
		raw(n)
		b.StartTimer()
	}
	b.StopTimer()
	rate := map[string]float64{}
	elapsed := map[string]time.Duration{}
	for _, s := range sides {
		elapsed[s.name] = s.elapsed
		rate[s.name] = float64(b.N) / s.elapsed.Seconds()
		b.ReportMetric(rate[s.name], s.name+"-msgs/s")
		b.ReportMetric(float64(b.N)/s.sending.Seconds(), s.name+"-send/s")
		b.ReportMetric(float64(b.N)/(s.elapsed-s.sending).Seconds(), s.name+"-recv/s")
	}
	ratio := func(a, over, unit string) { // unless BENCH_ONLY left a side out
		if rate[a] > 0 && rate[over] > 0 {
			b.ReportMetric(rate[a]/rate[over], unit)
		}
	}
	ratio("kgo-plain", "kafka-plain", "kgo-vs-kafka")
	ratio("kafka-encrypted", "kafka-plain", "kafka-encrypted-vs-plain")
	ratio("kgo-encrypted", "kgo-plain", "kgo-encrypted-vs-plain")
	for _, name := range []string{"kafka", "kgo"} {
		plain, ok := elapsed[name+"-plain"]
		if !ok {
			continue
		}
		// The ceiling of encrypted ÷ plain: a plain round trip plus nothing but the cipher.
		b.ReportMetric(plain.Seconds()/(plain+gcm).Seconds(), name+"-gcm-ceiling")
		// What encryption adds to a message's round trip in all (codec, cipher, the
		// larger record and its two envelope headers, garbage collection), to set
		// beside gcm-ns/msg.
		if enc, ok := elapsed[name+"-encrypted"]; ok {
			b.ReportMetric(float64((enc-plain).Nanoseconds())/float64(b.N), name+"-added-ns/msg")
		}
	}
	b.ReportMetric(float64(gcm.Nanoseconds())/float64(b.N), "gcm-ns/msg")
}
