// Package broker opens gocloud topics and subscriptions by URL for the wrappers and the CLI.
// Every scheme registered on gocloud's default URL mux works: the application links the
// drivers it uses (package drivers links them all, for the CLI and the tests). kafka://
// (sarama) and kgo:// (franz-go, package kgopubsub) get an opener of their own that,
// unlike gocloud's default one, can reach a managed cluster such as Confluent Cloud (TLS
// + SASL PLAIN, or SCRAM on kgo://) from environment variables or a client.properties
// file, bounds every request it makes, and checks at open that the topic exists. Nothing
// outside this package names a broker.
//
// Opening never outlives its context or Options.Timeout: some drivers (kafkapubsub)
// connect without a context, so an open runs on its own goroutine and is abandoned —
// closed when it finally returns — once the caller has stopped waiting.
package broker

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"gocloud.dev/pubsub"

	"github.com/pubcrypt/pubcrypt/fault"
)

// DefaultTimeout is Options.Timeout when it is zero.
const DefaultTimeout = 30 * time.Second

// Options configure an open.
type Options struct {
	// Timeout bounds the open itself (reaching the broker and, on Kafka, checking that
	// the topic exists) and, where the driver lets it be set, each request afterwards
	// (Kafka: connect, read, write and metadata lookups). Zero means DefaultTimeout. On
	// Kafka a subscription needs more than the consumer group's session timeout (10 s):
	// joining a group waits that long for a member that died.
	Timeout time.Duration
	// ReadAhead bounds the messages a Kafka subscription fetches ahead of its consumer
	// (sarama's ChannelBufferSize on kafka://, kgopubsub's ReadAhead on kgo://, where
	// franz-go also holds up to one fetch per broker); 0 keeps sarama's 256 and
	// kgopubsub's 4096. Large messages want few: 256
	// file chunks of 512 KiB are 128 MiB held in memory whenever the consumer is slower
	// than the broker (receive-files makes every chunk durable before acknowledging it).
	ReadAhead int
}

func (o Options) timeout() time.Duration {
	if o.Timeout <= 0 {
		return DefaultTimeout
	}
	return o.Timeout
}

// ErrTopicNotFound is matched (errors.Is) by the error of an open whose topic does not
// exist on the broker. It is a fault of the environment: nothing was sent or received.
var ErrTopicNotFound = fault.New(fault.Environment, "no such topic")

// OpenTopic opens the topic at rawURL with the default Options.
func OpenTopic(ctx context.Context, rawURL string) (*pubsub.Topic, error) {
	return OpenTopicWith(ctx, rawURL, Options{})
}

// OpenSubscription opens the subscription at rawURL with the default Options.
func OpenSubscription(ctx context.Context, rawURL string) (*pubsub.Subscription, error) {
	return OpenSubscriptionWith(ctx, rawURL, Options{})
}

// OpenTopicWith opens the topic at rawURL. It returns when the topic is open, when
// opts.Timeout has passed or when ctx ends, whichever comes first; an error that is not
// the caller's own cancellation is a fault of the environment (fault.ClassOf).
func OpenTopicWith(ctx context.Context, rawURL string, opts Options) (*pubsub.Topic, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("open topic: invalid URL %q: %w", rawURL, err)
	}
	open := func(ctx context.Context) (*pubsub.Topic, error) { return pubsub.OpenTopic(ctx, rawURL) }
	switch u.Scheme {
	case kafkaScheme:
		open = func(context.Context) (*pubsub.Topic, error) { return openKafkaTopic(u, opts) }
	case kgoScheme:
		open = func(ctx context.Context) (*pubsub.Topic, error) { return openKgoTopic(ctx, u, opts) }
	}
	return bounded(ctx, opts.timeout(), "open topic "+where(u), open,
		func(t *pubsub.Topic) { _ = t.Shutdown(context.Background()) })
}

// OpenSubscriptionWith opens the subscription at rawURL, bounded as OpenTopicWith is.
func OpenSubscriptionWith(ctx context.Context, rawURL string, opts Options) (*pubsub.Subscription, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("open subscription: invalid URL %q: %w", rawURL, err)
	}
	open := func(ctx context.Context) (*pubsub.Subscription, error) { return pubsub.OpenSubscription(ctx, rawURL) }
	switch u.Scheme {
	case kafkaScheme:
		open = func(context.Context) (*pubsub.Subscription, error) { return openKafkaSubscription(u, opts) }
	case kgoScheme:
		open = func(ctx context.Context) (*pubsub.Subscription, error) { return openKgoSubscription(ctx, u, opts) }
	}
	return bounded(ctx, opts.timeout(), "open subscription "+where(u), open,
		func(s *pubsub.Subscription) { _ = s.Shutdown(context.Background()) })
}

// where names what an open is reaching, for its timeout error: the URL, and on Kafka the
// brokers it was given.
func where(u *url.URL) string {
	if u.Scheme == kafkaScheme || u.Scheme == kgoScheme {
		if s, err := KafkaSettingsFromEnv(); err == nil {
			return redact(u) + " on " + strings.Join(s.Brokers, ",")
		}
	}
	return redact(u)
}

// bounded runs open on its own goroutine and waits for it at most timeout, or until ctx
// ends. An open that is abandoned is closed by discard once it returns, so a broker that
// answers late leaks nothing.
func bounded[T any](ctx context.Context, timeout time.Duration, what string, open func(context.Context) (T, error), discard func(T)) (T, error) {
	octx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	type result struct {
		v   T
		err error
	}
	done := make(chan result, 1)
	go func() {
		v, err := open(octx)
		done <- result{v, err}
	}()
	var zero T
	select {
	case r := <-done:
		if r.err != nil {
			if ctx.Err() != nil {
				return zero, ctx.Err()
			}
			return zero, environment(r.err)
		}
		return r.v, nil
	case <-octx.Done():
		go func() {
			if r := <-done; r.err == nil {
				discard(r.v)
			}
		}()
		if err := ctx.Err(); err != nil {
			return zero, err // the caller's own cancellation: not a fault
		}
		return zero, fault.Mark(fmt.Errorf("%s: no answer from the broker within %v: %w", what, timeout, context.DeadlineExceeded), fault.Environment)
	}
}

// environment classifies err as a fault of the environment unless it says otherwise:
// every error of an open is about reaching the broker.
func environment(err error) error {
	var c fault.Classifier
	if errors.As(err, &c) {
		return err
	}
	return fault.Mark(err, fault.Environment)
}
