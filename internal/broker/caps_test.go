package broker

import "testing"

func TestCapabilitiesFor(t *testing.T) {
	for _, c := range []struct {
		scheme            string
		keepsOrder, nacks bool
		name              string
	}{
		{"kafka", true, false, "Kafka"},
		{"kgo", true, true, "Kafka"},
		{"nats", true, true, "NATS"},
		{"rabbit", true, true, "RabbitMQ"},
		{"gcppubsub", false, true, "Google Pub/Sub"},
		{"awssqs", false, true, "Amazon SQS"},
		{"awssns", false, true, "Amazon SNS"},
		{"mem", false, true, "in-memory pubsub"},
		{"unknown", false, true, "unknown"},
	} {
		got := CapabilitiesFor(c.scheme)
		if got.KeepsOrder != c.keepsOrder || got.CanNack != c.nacks || got.Limits.Name != c.name {
			t.Errorf("%s: %+v", c.scheme, got)
		}
	}
	for _, s := range Schemes {
		if CapabilitiesFor(s).Limits.Name == s {
			t.Errorf("scheme %s has no limits of its own", s)
		}
	}
}
