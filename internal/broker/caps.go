package broker

// Schemes are the gocloud URL schemes of the brokers pubcrypt is tested with, each with
// the driver package an application links to open it (package drivers links them all).
var Schemes = []string{
	"mem",         // gocloud.dev/pubsub/mempubsub
	"kafka",       // gocloud.dev/pubsub/kafkapubsub, through this package's opener
	"kgo",         // github.com/pubcrypt/pubcrypt/kgopubsub (franz-go), through this package's opener
	"gcppubsub",   // gocloud.dev/pubsub/gcppubsub
	"gcppubsubv2", // gocloud.dev/pubsub/gcppubsubv2
	"awssns",      // gocloud.dev/pubsub/awssnssqs
	"awssqs",      // gocloud.dev/pubsub/awssnssqs
	"azuresb",     // gocloud.dev/pubsub/azuresb
	"rabbit",      // gocloud.dev/pubsub/rabbitpubsub
	"nats",        // gocloud.dev/pubsub/natspubsub
}

// Capabilities are what the wrappers and the CLI need to know of a broker: what it
// accepts in one message, and how it delivers. Code outside this package asks here
// instead of naming brokers.
type Capabilities struct {
	// Limits are what the broker accepts in one message.
	Limits Limits
	// KeepsOrder: messages of one partition, subject or queue arrive in the order they
	// were sent (Kafka, NATS, RabbitMQ). Elsewhere (Pub/Sub without ordering keys, SQS
	// standard queues, SNS, Service Bus, mem) they may arrive in any order.
	KeepsOrder bool
	// CanNack: a nacked message is delivered again. gocloud's kafkapubsub has no Nack:
	// a message that must not be acknowledged yet is held and retried instead, and the
	// messages behind it on its partition wait.
	CanNack bool
}

// CapabilitiesFor returns the capabilities of the broker behind a gocloud URL scheme.
// An unknown scheme keeps no order, can nack (gocloud's portable default) and has no
// limits.
func CapabilitiesFor(scheme string) Capabilities {
	c := Capabilities{Limits: LimitsFor(scheme), CanNack: true}
	switch scheme {
	case "kafka":
		c.KeepsOrder, c.CanNack = true, false
	case "kgo":
		c.KeepsOrder = true
	case "nats", "rabbit":
		c.KeepsOrder = true
	}
	return c
}
