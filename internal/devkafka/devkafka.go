// Package devkafka runs a real Kafka-protocol broker (franz-go's kfake) inside the process,
// for the tests and the demo's embedded default. It speaks the wire protocol, so gocloud's
// kafkapubsub (sarama) and outside clients such as kcat talk to it as to any broker.
package devkafka

import (
	"context"
	"fmt"
	"strconv"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Options configure the broker. The zero value is one broker on a random loopback port.
type Options struct {
	// Port to listen on; 0 picks a free one.
	Port int
	// Topics to create at start, with Partitions partitions each (default 1).
	Topics     []string
	Partitions int32
	// MaxMessageBytes raises or lowers the broker's message.max.bytes (default: Kafka's 1048588).
	MaxMessageBytes int
	// DataDir keeps records and group offsets across a restart of the broker.
	DataDir string
}

// Broker is a running in-process broker.
type Broker struct {
	cluster *kfake.Cluster
	// Addrs are the bootstrap addresses, host:port.
	Addrs []string
}

// Start starts a broker. Close it when done.
func Start(opts Options) (*Broker, error) {
	kopts := []kfake.Opt{kfake.NumBrokers(1), kfake.Ports(opts.Port)}
	if len(opts.Topics) > 0 {
		p := opts.Partitions
		if p <= 0 {
			p = 1
		}
		kopts = append(kopts, kfake.SeedTopics(p, opts.Topics...))
	}
	if opts.MaxMessageBytes > 0 {
		kopts = append(kopts, kfake.BrokerConfigs(map[string]string{
			"message.max.bytes": strconv.Itoa(opts.MaxMessageBytes),
		}))
	}
	if opts.DataDir != "" {
		kopts = append(kopts, kfake.DataDir(opts.DataDir))
	}
	c, err := kfake.NewCluster(kopts...)
	if err != nil {
		return nil, fmt.Errorf("devkafka: start broker: %w", err)
	}
	return &Broker{cluster: c, Addrs: c.ListenAddrs()}, nil
}

// Cluster exposes kfake's control surface (for tests that inject faults).
func (b *Broker) Cluster() *kfake.Cluster { return b.cluster }

// Close stops the broker.
func (b *Broker) Close() { b.cluster.Close() }

// ReadRaw reads the first n records of topic the way an outside admin would: a plain
// Kafka client, no decryption. It fails if n records are not there before ctx ends.
func (b *Broker) ReadRaw(ctx context.Context, topic string, n int) ([]*kgo.Record, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(b.Addrs...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	var out []*kgo.Record
	for len(out) < n {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return out, fmt.Errorf("devkafka: read %d of %d records from %s: %w", len(out), n, topic, err)
		}
		fs.EachRecord(func(r *kgo.Record) { out = append(out, r) })
	}
	return out, nil
}

// ProduceRaw writes records straight to the broker, bypassing pubcrypt (to tamper).
func (b *Broker) ProduceRaw(ctx context.Context, rs ...*kgo.Record) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(b.Addrs...))
	if err != nil {
		return err
	}
	defer cl.Close()
	return cl.ProduceSync(ctx, rs...).FirstErr()
}
