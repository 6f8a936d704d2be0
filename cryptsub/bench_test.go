package cryptsub_test

import (
	"bytes"
	"context"
	"strconv"
	"testing"
	"time"

	"gocloud.dev/pubsub"
	"gocloud.dev/pubsub/mempubsub"

	"github.com/pubcrypt/pubcrypt/cryptsub"
	"github.com/pubcrypt/pubcrypt/crypttopic"
	"github.com/pubcrypt/pubcrypt/internal/broker"
	"github.com/pubcrypt/pubcrypt/internal/devkafka"
	"github.com/pubcrypt/pubcrypt/keyring"
)

const benchBatch = 100 // messages per SendBatch

// benchPipe is one protection mode wired over an in-memory topic: an encrypting topic, a
// decrypting subscription and the keyrings of both sides (to count Vault calls).
type benchPipe struct {
	name       string
	top        *crypttopic.Topic
	sub        *cryptsub.Subscription
	send, recv *keyring.Vault
	batch      bool          // receive with ReceiveBatch(benchBatch) instead of Receive
	elapsed    time.Duration // sending and receiving
	sending    time.Duration // of which sending
	msgs       int
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

// roundTrip sends batches batches of benchBatch bodies, then receives and checks all of
// them, and adds the time taken to bp.elapsed. Everything is on the topic before the
// first Receive: mempubsub sleeps 250 ms when it polls an empty subscription, which would
// otherwise be measured instead of the encryption.
func (bp *benchPipe) roundTrip(b *testing.B, ctx context.Context, bodies [][]byte, batches int) {
	start := time.Now()
	n := 0
	for range batches {
		msgs := make([]*pubsub.Message, benchBatch)
		for j := range msgs {
			i := (bp.msgs + n) % len(bodies)
			msgs[j] = &pubsub.Message{Body: bodies[i], Metadata: map[string]string{"i": strconv.Itoa(i)}}
			n++
		}
		if err := bp.top.SendBatch(ctx, msgs); err != nil {
			b.Fatal(err)
		}
	}
	bp.sending += time.Since(start)
	check := func(m *pubsub.Message) {
		m.Ack()
		i, _ := strconv.Atoi(m.Metadata["i"])
		if !bytes.Equal(m.Body, bodies[i]) {
			b.Fatalf("%s: message %d decrypted to other bytes than were sent", bp.name, i)
		}
	}
	for got := 0; got < n; {
		if !bp.batch {
			m, err := bp.sub.Receive(ctx)
			if err != nil {
				b.Fatal(err)
			}
			check(m)
			got++
			continue
		}
		msgs, _, errs := bp.sub.ReceiveBatch(ctx, min(benchBatch, n-got))
		for i, m := range msgs {
			if errs[i] != nil {
				b.Fatal(errs[i])
			}
			check(m)
			got++
		}
	}
	bp.elapsed += time.Since(start)
	bp.msgs += n
}

func (bp *benchPipe) rate() float64 { return float64(bp.msgs) / bp.elapsed.Seconds() }

// BenchmarkFieldModes measures the round trip (SendBatch of 100, then Receive of each, or
// ReceiveBatch of 100 for transit)
// of a purchase, against the real Vault dev server and over an in-memory topic, so that
// the figures are the encryption's and Vault's, not a broker's. One op is one batch of
// 100 purchases through each of three modes, which run one after the other in the same
// run, on the same bodies:
//
//   - envelope: name, address and card_number as envelope fields (local AES-GCM under the
//     cached data key; no Vault call per message)
//   - transit: the same three fields by Vault Transit, received with ReceiveBatch(100)
//     (one Vault call per send batch and about one per received batch)
//   - body: the whole body encrypted (the default)
//
// transit-vs-envelope is transit's msgs/s over envelope's; transit-vault-calls/msg counts
// both sides' requests to Vault, transit-recv-vault-calls/msg the receive side's.
func BenchmarkFieldModes(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	_, bodies := purchases(11, 1000)
	pipes := []*benchPipe{
		newBenchPipe(b, "envelope", "name=envelope,address=envelope,card_number=envelope"),
		newBenchPipe(b, "transit", "name=transit,address=transit,card_number=transit"),
		newBenchPipe(b, "body", ""),
	}
	pipes[1].batch = true
	for _, bp := range pipes { // first data keys, connections, caches
		bp.roundTrip(b, ctx, bodies, 1)
		bp.elapsed, bp.sending, bp.msgs = 0, 0, 0
	}
	// The subscriptions, drained, each have a poll in flight that sleeps 250 ms; the
	// next Receive would wait for it inside the timed loop.
	time.Sleep(300 * time.Millisecond)
	transitSendCalls, transitRecvCalls := pipes[1].send.Calls(), pipes[1].recv.Calls()

	b.ResetTimer()
	for _, bp := range pipes {
		bp.roundTrip(b, ctx, bodies, b.N)
	}
	b.StopTimer()

	env, transit, body := pipes[0].rate(), pipes[1].rate(), pipes[2].rate()
	b.ReportMetric(env, "envelope-msgs/s")
	b.ReportMetric(transit, "transit-msgs/s")
	b.ReportMetric(body, "body-msgs/s")
	b.ReportMetric(transit/env, "transit-vs-envelope")
	// Where transit's time goes: a send batch costs one Vault call, a received batch one.
	t := pipes[1]
	b.ReportMetric(float64(t.msgs)/t.sending.Seconds(), "transit-send-msgs/s")
	b.ReportMetric(float64(t.msgs)/(t.elapsed-t.sending).Seconds(), "transit-recv-msgs/s")
	sendCalls, recvCalls := t.send.Calls()-transitSendCalls, t.recv.Calls()-transitRecvCalls
	b.ReportMetric(float64(sendCalls+recvCalls)/float64(t.msgs), "transit-vault-calls/msg")
	b.ReportMetric(float64(recvCalls)/float64(t.msgs), "transit-recv-vault-calls/msg")
}

// BenchmarkRoundTripKafka sends 1 KiB bodies (whole-body encryption, SendBatch of 100)
// through kfake and receives them, against plain gocloud Kafka on the same broker as the
// baseline, in the same run. One op is one message each way; encrypted-vs-plain is the
// encrypted msgs/s over the plain.
func BenchmarkRoundTripKafka(b *testing.B) {
	const encTopic, plainTopic = "bench_enc", "bench_plain"
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	kafka, err := devkafka.Start(devkafka.Options{Topics: []string{encTopic, plainTopic}})
	if err != nil {
		b.Fatal(err)
	}
	defer kafka.Close()
	b.Setenv("KAFKA_BROKERS", kafka.Addrs[0])

	top, err := crypttopic.Open(ctx, "kafka://"+encTopic, crypttopic.Options{Keyring: newVault(b, vaultServer)})
	if err != nil {
		b.Fatal(err)
	}
	defer top.Shutdown(context.Background())
	sub, err := cryptsub.Open(ctx, "kafka://g-"+encTopic+"?topic="+encTopic+"&offset=oldest", cryptsub.Options{Keyring: newVault(b, vaultServer)})
	if err != nil {
		b.Fatal(err)
	}
	defer sub.Shutdown(context.Background())
	plainTop, err := broker.OpenTopic(ctx, "kafka://"+plainTopic)
	if err != nil {
		b.Fatal(err)
	}
	defer plainTop.Shutdown(context.Background())
	plainSub, err := broker.OpenSubscription(ctx, "kafka://g-"+plainTopic+"?topic="+plainTopic+"&offset=oldest")
	if err != nil {
		b.Fatal(err)
	}
	defer plainSub.Shutdown(context.Background())

	body := bytes.Repeat([]byte("0123456789abcdef"), 64)
	type side struct {
		sendBatch func(context.Context, []*pubsub.Message) error
		receive   func(context.Context) (*pubsub.Message, error)
		elapsed   time.Duration
	}
	plainBatch := func(ctx context.Context, msgs []*pubsub.Message) error {
		errs := make(chan error, len(msgs))
		for _, m := range msgs {
			go func() { errs <- plainTop.Send(ctx, m) }()
		}
		for range msgs {
			if err := <-errs; err != nil {
				return err
			}
		}
		return nil
	}
	enc := &side{sendBatch: top.SendBatch, receive: sub.Receive}
	plain := &side{sendBatch: plainBatch, receive: plainSub.Receive}
	run := func(s *side, n int) {
		start := time.Now()
		for sent := 0; sent < n; sent += benchBatch {
			msgs := make([]*pubsub.Message, min(benchBatch, n-sent))
			for i := range msgs {
				msgs[i] = &pubsub.Message{Body: body}
			}
			if err := s.sendBatch(ctx, msgs); err != nil {
				b.Fatal(err)
			}
		}
		for range n {
			m, err := s.receive(ctx)
			if err != nil {
				b.Fatal(err)
			}
			m.Ack()
			if !bytes.Equal(m.Body, body) {
				b.Fatal("body differs after the round trip")
			}
		}
		s.elapsed += time.Since(start)
	}
	run(enc, 1) // consumer groups joined, data key fetched
	run(plain, 1)
	enc.elapsed, plain.elapsed = 0, 0

	b.SetBytes(int64(len(body)))
	b.ResetTimer()
	// Alternate in chunks so that drift hits both alike.
	for done := 0; done < b.N; done += 1000 {
		n := min(1000, b.N-done)
		run(enc, n)
		b.StopTimer()
		run(plain, n)
		b.StartTimer()
	}
	b.StopTimer()
	encRate, plainRate := float64(b.N)/enc.elapsed.Seconds(), float64(b.N)/plain.elapsed.Seconds()
	b.ReportMetric(encRate, "msgs/s")
	b.ReportMetric(plainRate, "plain-msgs/s")
	b.ReportMetric(encRate/plainRate, "encrypted-vs-plain")
}
