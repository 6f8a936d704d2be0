package kgopubsub

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"gocloud.dev/gcerrors"
	"gocloud.dev/pubsub"
	"gocloud.dev/pubsub/batcher"
	"gocloud.dev/pubsub/driver"

	"github.com/pubcrypt/pubcrypt/fault"
	"github.com/pubcrypt/pubcrypt/internal/wire"
)

// TopicOptions configure a topic. The zero value sends records without a key.
type TopicOptions struct {
	// KeyName is the metadata entry whose value becomes the record key. The entry is not
	// sent as a header; a subscription with the same KeyName puts it back. A message
	// without the entry gets no key.
	KeyName string
	// KeyField is a dotted path into a JSON object body ("user.id") whose value becomes
	// the record key: a string's text, or a number's JSON text as written. A message
	// whose body has no such string or number is not sent; its error is a *KeyError, a
	// fault of the message (package fault). At most one of KeyName and KeyField is set.
	// Under encryption the body is sealed by the time it gets here: crypttopic reads a
	// key_field URL parameter itself, from the plaintext, and sends the key through
	// KeyName (docs/FORMAT.md section 3.2).
	KeyField string
	// Partitioner is "" for Kafka's partitioning (franz-go's sticky key partitioner:
	// murmur2 of the key like the Java client, a sticky partition per batch without one),
	// or PartitionerRecord (URL: partitioner=record): each record goes to the partition
	// its kgo.Record.Partition names, set by the message's BeforeSend, modulo the topic's
	// partitions. A bridge uses it to send every record to the partition number it came
	// from, which keeps per-key and per-partition order without reading the keys.
	Partitioner string
	// Linger is franz-go's ProducerLinger, for the client URLOpener builds: how long a
	// partition's records wait for more before they are sent. Zero is the default of the
	// batching (see BatcherOptions), negative none.
	Linger time.Duration
	// BatcherOptions shape gocloud's batching of Send calls into driver batches; a zero
	// field takes the default.
	//
	// By default (without KeyField) one driver batch of up to 1,000 messages is in
	// flight at a time (MaxHandlers 1): messages reach each partition in the order their
	// Send calls reached the topic, and a batch, handed over whole, needs no linger
	// (default 0). More handlers overlap batches, for a cluster far away, and give up
	// that order between batches.
	//
	// With KeyField, each Send is a driver batch of its own (MaxBatchSize 1, up to 1,000
	// concurrently), so that a message without the key field fails alone: gocloud gives
	// every message of a batch the batch's error. franz-go then batches the concurrent
	// records on the wire (default linger DefaultLinger).
	BatcherOptions batcher.Options
}

// DefaultLinger is the linger of a topic whose Sends are single-message driver batches
// (KeyField, or BatcherOptions.MaxBatchSize 1).
const DefaultLinger = 5 * time.Millisecond

// batching returns the effective batcher options and linger of o.
func (o TopicOptions) batching() (batcher.Options, time.Duration) {
	b := o.BatcherOptions
	single := o.KeyField != "" || b.MaxBatchSize == 1
	if b.MaxBatchSize == 0 {
		b.MaxBatchSize = 1000
		if single {
			b.MaxBatchSize = 1
		}
	}
	if b.MaxHandlers == 0 {
		b.MaxHandlers = 1
		if single {
			b.MaxHandlers = 1000
		}
	}
	l := o.Linger
	switch {
	case l == 0 && single:
		l = DefaultLinger
	case l < 0:
		l = 0
	}
	return b, l
}

// PartitionerRecord is TopicOptions.Partitioner for partitions chosen by BeforeSend.
const PartitionerRecord = "record"

func (o TopicOptions) validate() error {
	if o.Partitioner != "" && o.Partitioner != PartitionerRecord {
		return fmt.Errorf("kgopubsub: partitioner %q: want %q or none", o.Partitioner, PartitionerRecord)
	}
	if o.KeyName != "" && o.KeyField != "" {
		return errors.New("kgopubsub: key_name and key_field are both set; choose one")
	}
	if o.KeyField != "" {
		for _, p := range strings.Split(o.KeyField, ".") {
			if p == "" {
				return fmt.Errorf("kgopubsub: key_field %q has an empty step", o.KeyField)
			}
		}
	}
	return nil
}

// producerOpts are the client options a topic adds before the caller's own.
func producerOpts(o TopicOptions) []kgo.Opt {
	_, l := o.batching()
	opts := []kgo.Opt{kgo.ProducerLinger(l)}
	if o.Partitioner == PartitionerRecord {
		opts = append(opts, kgo.RecordPartitioner(recordPartitioner))
	}
	return opts
}

// OpenTopic opens a topic that produces to topicName through cl, which the caller owns
// and closes after the topic's Shutdown: a program can share one client between topics,
// or with a subscription (As). Linger is cl's own (kgo.ProducerLinger); opts.Linger is
// used only by URLOpener, which builds the client.
func OpenTopic(cl *kgo.Client, topicName string, opts *TopicOptions) (*pubsub.Topic, error) {
	if opts == nil {
		opts = &TopicOptions{}
	}
	if err := opts.validate(); err != nil {
		return nil, err
	}
	return newTopic(cl, false, topicName, *opts), nil
}

func newTopic(cl *kgo.Client, owned bool, name string, opts TopicOptions) *pubsub.Topic {
	t := &topic{cl: cl, owned: owned, name: name, opts: opts}
	if opts.KeyField != "" {
		t.keyPath = strings.Split(opts.KeyField, ".")
	}
	bo, _ := opts.batching()
	return pubsub.NewTopic(t, &bo)
}

type topic struct {
	cl      *kgo.Client
	owned   bool // close cl on Close
	name    string
	opts    TopicOptions
	keyPath []string
}

// KeyError is why a message's record key could not be taken from its body. It is a
// fault of the message: sending it again never helps. It names the field, never a value.
type KeyError struct {
	Field  string
	Reason string
}

func (e *KeyError) Error() string {
	return fmt.Sprintf("kgopubsub: no record key: key field %q %s", e.Field, e.Reason)
}

// FaultClass is fault.Message.
func (e *KeyError) FaultClass() fault.Class { return fault.Message }

// keyFromBody returns the record key at t.keyPath in a JSON object body.
func (t *topic) keyFromBody(body []byte) ([]byte, error) {
	v, problem := wire.ScalarAt(body, t.keyPath)
	switch problem {
	case wire.ScalarFound:
		return []byte(v), nil
	case wire.ScalarNotObject:
		return nil, &KeyError{Field: t.opts.KeyField, Reason: "is not found: the body is not a JSON object down to it"}
	case wire.ScalarMissing:
		return nil, &KeyError{Field: t.opts.KeyField, Reason: "is not in the body"}
	case wire.ScalarBadString:
		return nil, &KeyError{Field: t.opts.KeyField, Reason: "holds an invalid string"}
	}
	return nil, &KeyError{Field: t.opts.KeyField, Reason: "is not a string or a number"}
}

// record builds the Kafka record of dm.
func (t *topic) record(dm *driver.Message) (*kgo.Record, error) {
	r := &kgo.Record{Topic: t.name, Value: dm.Body}
	if t.keyPath != nil {
		k, err := t.keyFromBody(dm.Body)
		if err != nil {
			return nil, err
		}
		r.Key = k
	}
	if len(dm.Metadata) > 0 {
		r.Headers = make([]kgo.RecordHeader, 0, len(dm.Metadata))
	}
	for k, v := range dm.Metadata {
		if t.opts.KeyName != "" && k == t.opts.KeyName {
			r.Key = []byte(v)
			continue
		}
		r.Headers = append(r.Headers, kgo.RecordHeader{Key: k, Value: []byte(v)})
	}
	if dm.BeforeSend != nil {
		if err := dm.BeforeSend(func(i any) bool {
			if p, ok := i.(**kgo.Record); ok {
				*p = r
				return true
			}
			return false
		}); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// SendBatch produces the records of dms in their order and waits for all of them; it
// returns the first error. Nothing is produced when a record cannot be built.
func (t *topic) SendBatch(ctx context.Context, dms []*driver.Message) error {
	rs := make([]*kgo.Record, len(dms))
	for i, dm := range dms {
		r, err := t.record(dm)
		if err != nil {
			return err
		}
		rs[i] = r
	}
	errs := make(chan error, len(rs))
	for _, r := range rs {
		t.cl.Produce(ctx, r, func(_ *kgo.Record, err error) { errs <- err })
	}
	var first error
	for range rs {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	if first != nil {
		return fmt.Errorf("kgopubsub: produce to %s: %w", t.name, first)
	}
	for _, dm := range dms {
		if dm.AfterSend != nil {
			if err := dm.AfterSend(func(any) bool { return false }); err != nil {
				return err
			}
		}
	}
	return nil
}

// IsRetryable is false: franz-go already retried within its delivery timeout, and its
// idempotent producer only keeps order and avoids duplicates across its own retries.
func (t *topic) IsRetryable(error) bool { return false }

func (t *topic) As(i any) bool {
	switch p := i.(type) {
	case **kgo.Client:
		*p = t.cl
		return true
	case **topic: // SendInOrder
		*p = t
		return true
	}
	return false
}

// SendInOrder sends msgs on pt, a topic this package opened, as one batch in the order
// given, and returns once the broker has acknowledged every record or one failed: records
// of one partition (of one key, or without a key one batch of the sticky partitioner)
// arrive in the order of msgs, the way franz-go's idempotent producer keeps it. pubsub.Topic.Send
// cannot promise that for concurrent calls, and calls in sequence wait for the broker
// once per message. It goes around gocloud's batcher (and its tracing); BeforeSend and
// AfterSend are called as by Send. ok is false, and nothing is sent, when pt is not a
// kgopubsub topic. A message whose record key cannot be found (key_field) fails the
// batch before anything is sent, with its *KeyError.
func SendInOrder(ctx context.Context, pt *pubsub.Topic, msgs []*pubsub.Message) (ok bool, err error) {
	var t *topic
	if pt == nil || !pt.As(&t) || t == nil {
		return false, nil
	}
	dms := make([]*driver.Message, len(msgs))
	for i, m := range msgs {
		dms[i] = &driver.Message{Body: m.Body, Metadata: m.Metadata, BeforeSend: m.BeforeSend, AfterSend: m.AfterSend}
	}
	if err := t.SendBatch(ctx, dms); err != nil {
		return true, err
	}
	return true, nil
}

// KeyNaming returns the KeyName and KeyField pt was opened with, and false when pt is not
// a kgopubsub topic: a sender that protects record keys learns that the topic sends an
// entry, or a body field, as the record key.
func KeyNaming(pt *pubsub.Topic) (keyName, keyField string, ok bool) {
	var t *topic
	if pt == nil || !pt.As(&t) || t == nil {
		return "", "", false
	}
	return t.opts.KeyName, t.opts.KeyField, true
}

func (t *topic) ErrorAs(err error, i any) bool          { return errorAs(err, i) }
func (t *topic) ErrorCode(err error) gcerrors.ErrorCode { return errorCode(err) }

func (t *topic) Close() error {
	if t.owned {
		t.cl.Close()
	}
	return nil
}
