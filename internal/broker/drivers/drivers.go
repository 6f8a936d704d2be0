// Package drivers links every gocloud pubsub driver pubcrypt is tested with, so that
// their URL schemes open. The CLI and the tests import it; the library packages do not:
// a gocloud driver registers itself when the application imports it, and a program that
// uses only Kafka should not carry every cloud SDK (a Kafka-only program with crypttopic
// and cryptsub was 45.0 MB when internal/broker imported them all, and 24 MB without).
// An application imports the drivers it uses itself, as with gocloud:
//
//	import _ "gocloud.dev/pubsub/gcppubsub"
package drivers

import (
	_ "gocloud.dev/pubsub/awssnssqs"    // awssns://, awssqs://
	_ "gocloud.dev/pubsub/azuresb"      // azuresb://
	_ "gocloud.dev/pubsub/gcppubsub"    // gcppubsub://
	_ "gocloud.dev/pubsub/gcppubsubv2"  // gcppubsubv2://
	_ "gocloud.dev/pubsub/kafkapubsub"  // kafka://
	_ "gocloud.dev/pubsub/mempubsub"    // mem://
	_ "gocloud.dev/pubsub/natspubsub"   // nats://
	_ "gocloud.dev/pubsub/rabbitpubsub" // rabbit://
)
