// Package broker opens gocloud topics and subscriptions by URL for the wrappers and the CLI.
// Every scheme registered on gocloud's default URL mux works; kafka:// gets an opener of
// its own that, unlike gocloud's default one, can reach a managed cluster such as
// Confluent Cloud (TLS + SASL PLAIN) from environment variables or a client.properties
// file. Nothing outside this package names a broker.
package broker

import (
	"context"
	"fmt"
	"net/url"

	"gocloud.dev/pubsub"
	_ "gocloud.dev/pubsub/awssnssqs"    // awssns://, awssqs://
	_ "gocloud.dev/pubsub/azuresb"      // azuresb://
	_ "gocloud.dev/pubsub/gcppubsub"    // gcppubsub://
	_ "gocloud.dev/pubsub/gcppubsubv2"  // gcppubsubv2://
	_ "gocloud.dev/pubsub/kafkapubsub"  // kafka://
	_ "gocloud.dev/pubsub/mempubsub"    // mem://
	_ "gocloud.dev/pubsub/natspubsub"   // nats://
	_ "gocloud.dev/pubsub/rabbitpubsub" // rabbit://
)

// OpenTopic opens the topic at rawURL.
func OpenTopic(ctx context.Context, rawURL string) (*pubsub.Topic, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("open topic: invalid URL %q: %w", rawURL, err)
	}
	if u.Scheme == kafkaScheme {
		return openKafkaTopic(ctx, u)
	}
	return pubsub.OpenTopic(ctx, rawURL)
}

// OpenSubscription opens the subscription at rawURL.
func OpenSubscription(ctx context.Context, rawURL string) (*pubsub.Subscription, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("open subscription: invalid URL %q: %w", rawURL, err)
	}
	if u.Scheme == kafkaScheme {
		return openKafkaSubscription(ctx, u)
	}
	return pubsub.OpenSubscription(ctx, rawURL)
}
