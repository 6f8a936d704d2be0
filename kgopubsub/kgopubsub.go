// Package kgopubsub is a gocloud.dev/pubsub driver for Kafka over franz-go
// (github.com/twmb/franz-go/pkg/kgo), registered under the URL scheme "kgo".
//
// It keeps what Kafka users rely on and gocloud's kafkapubsub (sarama) loses:
//
//   - Record keys. A topic takes its record key from a metadata entry (key_name=) or from
//     a field of a JSON body (key_field=user.id, a dotted path). A key_name entry leaves
//     the headers on send and is put back into the metadata on receive under the same
//     name, so a receiver sees the metadata the sender gave. Keyed records are placed by
//     franz-go's default partitioner, which hashes keys with murmur2 exactly as the Java
//     client does: a key lands on the same partition whichever client wrote it.
//   - Order. Records of one driver batch reach their partition in the order given, and
//     by default one batch is in flight at a time, so Send calls reach each partition in
//     the order they reached the topic: franz-go's idempotent producer (on by default)
//     keeps a partition's order across retries. Send calls made concurrently reach the
//     topic in no defined order, as with every gocloud driver; a caller that needs order
//     sends in sequence, or from one goroutine per key.
//   - Acknowledgement. A subscription is a consumer group member that commits by itself
//     only what was acknowledged: per partition, the offset after the highest contiguous
//     acknowledged record. An unacknowledged record holds back the commits of its own
//     partition and no other. Nack is supported: the record is delivered again, ahead of
//     the later records of its partition that the driver still holds (gocloud's
//     Subscription may have taken some already: those come first). A caller that nacks
//     in a loop paces itself; the redelivery is immediate.
//   - Rebalances. When partitions are revoked, what is acknowledged on them is
//     committed and their buffered records are dropped (the new owner reads them from
//     the commit); acknowledgements that arrive later for them are ignored.
//
// Headers become metadata and metadata headers. Kafka allows a header key twice; the
// metadata map cannot, so on receive the last header of a key wins.
//
// # URLs
//
// Topics: kgo://TOPIC?key_name=NAME or kgo://TOPIC?key_field=a.b, and
// partitioner=record for partitions chosen per record (TopicOptions.Partitioner).
// Subscriptions:
// kgo://GROUP?topic=T1&topic=T2&offset=oldest|newest&key_name=NAME&isolation=read_committed|read_uncommitted;
// offset is where a group that has committed nothing starts (default newest); isolation
// is Kafka's (default read_committed: records of aborted transactions are never seen). The default opener reaches
// the brokers of the KAFKA_BROKERS environment variable (comma-separated), as
// kafkapubsub's does; a program that needs TLS or SASL sets URLOpener.Opts and
// registers its own opener, or uses the constructors.
//
// # As
//
//   - Topic: **kgo.Client
//   - Subscription: **kgo.Client
//   - Message: **kgo.Record (received messages); BeforeSend: **kgo.Record
//   - Error: *kerr.Error, *kgo.ErrGroupSession, *KeyError
//
// # Exactly once
//
// A Transactor (OpenTransactor) is a group member that consumes and produces in Kafka
// transactions: what it produces for a batch of records and the offsets after them are
// committed together or not at all, so a read_committed consumer of its output sees each
// input record's result exactly once across crashes and rebalances.
package kgopubsub

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path"
	"strings"
	"sync"

	"github.com/twmb/franz-go/pkg/kgo"
	"gocloud.dev/pubsub"
)

// Scheme is the URL scheme this package registers on gocloud's default URL mux.
const Scheme = "kgo"

func init() {
	o := new(defaultOpener)
	pubsub.DefaultURLMux().RegisterTopic(Scheme, o)
	pubsub.DefaultURLMux().RegisterSubscription(Scheme, o)
}

type defaultOpener struct {
	once   sync.Once
	opener *URLOpener
	err    error
}

func (o *defaultOpener) get() (*URLOpener, error) {
	o.once.Do(func() {
		var brokers []string
		for _, b := range strings.Split(os.Getenv("KAFKA_BROKERS"), ",") {
			if b = strings.TrimSpace(b); b != "" {
				brokers = append(brokers, b)
			}
		}
		if len(brokers) == 0 {
			o.err = errors.New("KAFKA_BROKERS environment variable not set")
			return
		}
		o.opener = &URLOpener{Opts: []kgo.Opt{kgo.SeedBrokers(brokers...)}}
	})
	return o.opener, o.err
}

func (o *defaultOpener) OpenTopicURL(ctx context.Context, u *url.URL) (*pubsub.Topic, error) {
	op, err := o.get()
	if err != nil {
		return nil, fmt.Errorf("open topic %v: %w", u, err)
	}
	return op.OpenTopicURL(ctx, u)
}

func (o *defaultOpener) OpenSubscriptionURL(ctx context.Context, u *url.URL) (*pubsub.Subscription, error) {
	op, err := o.get()
	if err != nil {
		return nil, fmt.Errorf("open subscription %v: %w", u, err)
	}
	return op.OpenSubscriptionURL(ctx, u)
}

// URLOpener opens kgo:// URLs. Opts are the franz-go client options every topic and
// subscription it opens starts from (seed brokers, TLS, SASL, timeouts); the URL's query
// parameters override the matching fields of TopicOptions and SubscriptionOptions.
// Each topic and subscription gets a client of its own, closed with it.
type URLOpener struct {
	Opts                []kgo.Opt
	TopicOptions        TopicOptions
	SubscriptionOptions SubscriptionOptions
}

// OpenTopicURL opens the topic named by u's host and path.
func (o *URLOpener) OpenTopicURL(ctx context.Context, u *url.URL) (*pubsub.Topic, error) {
	name, opts, err := o.topicURL(u)
	if err != nil {
		return nil, err
	}
	cl, err := kgo.NewClient(append(producerOpts(opts), o.Opts...)...)
	if err != nil {
		return nil, fmt.Errorf("open topic %v: %w", u, err)
	}
	return newTopic(cl, true, name, opts), nil
}

// topicURL returns the topic name and options of a topic URL.
func (o *URLOpener) topicURL(u *url.URL) (string, TopicOptions, error) {
	opts := o.TopicOptions
	for param, v := range u.Query() {
		if len(v) != 1 || v[0] == "" {
			return "", opts, fmt.Errorf("open topic %v: invalid query parameter %q", u, param)
		}
		switch param {
		case "key_name":
			opts.KeyName = v[0]
		case "key_field":
			opts.KeyField = v[0]
		case "partitioner":
			opts.Partitioner = v[0]
		default:
			return "", opts, fmt.Errorf("open topic %v: invalid query parameter %q", u, param)
		}
	}
	if err := opts.validate(); err != nil {
		return "", opts, fmt.Errorf("open topic %v: %w", u, err)
	}
	return path.Join(u.Host, u.Path), opts, nil
}

// OpenSubscriptionURL opens a member of the group named by u's host and path.
func (o *URLOpener) OpenSubscriptionURL(ctx context.Context, u *url.URL) (*pubsub.Subscription, error) {
	group, topics, opts, err := o.subscriptionURL(u)
	if err != nil {
		return nil, err
	}
	return OpenSubscription(o.Opts, group, topics, &opts)
}

// subscriptionURL returns the group, topics and options of a subscription URL.
func (o *URLOpener) subscriptionURL(u *url.URL) (string, []string, SubscriptionOptions, error) {
	opts := o.SubscriptionOptions
	var topics []string
	for param, v := range u.Query() {
		switch param {
		case "topic":
			topics = v
			continue
		}
		if len(v) != 1 || v[0] == "" {
			return "", nil, opts, fmt.Errorf("open subscription %v: invalid query parameter %q", u, param)
		}
		switch param {
		case "offset":
			switch v[0] {
			case "oldest":
				opts.Oldest = true
			case "newest":
				opts.Oldest = false
			default:
				return "", nil, opts, fmt.Errorf("open subscription %v: offset %q is not oldest or newest", u, v[0])
			}
		case "isolation":
			switch v[0] {
			case "read_committed":
				opts.ReadUncommitted = false
			case "read_uncommitted":
				opts.ReadUncommitted = true
			default:
				return "", nil, opts, fmt.Errorf("open subscription %v: isolation %q is not read_committed or read_uncommitted", u, v[0])
			}
		case "key_name":
			opts.KeyName = v[0]
		default:
			return "", nil, opts, fmt.Errorf("open subscription %v: invalid query parameter %q", u, param)
		}
	}
	return path.Join(u.Host, u.Path), topics, opts, nil
}
