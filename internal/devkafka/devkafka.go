// Package devkafka runs a real Kafka-protocol broker (franz-go's kfake) inside the process,
// for the tests and the demo's embedded default. It speaks the wire protocol, so gocloud's
// kafkapubsub (sarama) and outside clients such as kcat talk to it as to any broker.
//
// For fault tests the broker can go down and come back (Stop, Restart) on the same port,
// keeping its records and committed group offsets when it has a DataDir, and it can sit
// behind a netfault proxy that every client connection goes through (Options.FaultProxy),
// to cut, slow down or silence the broker without stopping it.
package devkafka

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/pubcrypt/pubcrypt/internal/netfault"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
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
	// DataDir keeps topics, records, committed group offsets and group members across
	// Restart (kfake writes it as it goes and saves the rest on Stop). Without it a
	// restarted broker is a new, empty one with only Topics.
	DataDir string
	// FaultProxy puts a netfault.Proxy in front of the broker. The broker advertises the
	// proxy's address in its metadata, so every connection a client makes, not only the
	// bootstrap one, goes through the proxy; Port is then the proxy's port.
	FaultProxy bool
}

// Broker is an in-process broker that can be stopped and restarted on the same address.
type Broker struct {
	// Addrs are the bootstrap addresses, host:port. They stay the same across Restart.
	Addrs []string

	opts  Options
	proxy *netfault.Proxy // nil unless Options.FaultProxy

	mu      sync.Mutex
	cluster *kfake.Cluster // nil while stopped
	addr    string         // where kfake itself listens, kept across restarts
	closed  bool

	listenAddr string // set by listen, read after kfake.NewCluster returns
}

// Start starts a broker. Close it when done.
func Start(opts Options) (*Broker, error) {
	b := &Broker{opts: opts, addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(opts.Port))}
	if opts.FaultProxy {
		p, err := netfault.ListenAt(b.addr, "")
		if err != nil {
			return nil, fmt.Errorf("devkafka: start fault proxy: %w", err)
		}
		b.proxy = p
		b.addr = "127.0.0.1:0"
	}
	c, err := b.newCluster()
	if err != nil {
		if b.proxy != nil {
			b.proxy.Close()
		}
		return nil, err
	}
	b.cluster = c
	// A port of 0 became a real one: keep it, so that Restart comes back where clients look.
	b.addr = b.listenAddr
	if b.proxy != nil {
		b.proxy.SetTarget(b.addr)
		b.Addrs = []string{b.proxy.Addr()}
	} else {
		b.Addrs = c.ListenAddrs()
	}
	return b, nil
}

func (b *Broker) newCluster() (*kfake.Cluster, error) {
	opts := b.opts
	kopts := []kfake.Opt{kfake.NumBrokers(1), kfake.ListenFn(b.listen)}
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
		return nil, fmt.Errorf("devkafka: start broker on %s: %w", b.addr, err)
	}
	return c, nil
}

// listen is kfake's ListenFn: it listens on the broker's own address (kfake asks for
// 127.0.0.1:0 since no Ports option is given) and, behind a fault proxy, makes the
// listener report the proxy's address, which kfake then advertises in its metadata.
func (b *Broker) listen(network, _ string) (net.Listener, error) {
	ln, err := net.Listen(network, b.addr)
	if err != nil {
		return nil, err
	}
	b.listenAddr = ln.Addr().String()
	if b.proxy != nil {
		return advertised{ln, b.proxy.Listener().Addr()}, nil
	}
	return ln, nil
}

type advertised struct {
	net.Listener
	addr net.Addr
}

func (a advertised) Addr() net.Addr { return a.addr }

// Cluster exposes kfake's control surface (for tests that inject faults). It is nil
// while the broker is stopped, and a new one after each Restart.
func (b *Broker) Cluster() *kfake.Cluster {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.cluster
}

// Proxy is the fault proxy in front of the broker, nil unless Options.FaultProxy.
func (b *Broker) Proxy() *netfault.Proxy { return b.proxy }

// Stop takes the broker down the way an orderly broker shutdown does: the listener and
// every client connection close, and with a DataDir the state is saved. Clients see
// their connections close and new ones refused (or, behind a fault proxy, reset).
// Stopping a stopped broker does nothing.
func (b *Broker) Stop() {
	b.mu.Lock()
	c := b.cluster
	b.cluster = nil
	b.mu.Unlock()
	if c != nil {
		c.Close()
	}
}

// Restart stops the broker if it runs and starts it again on the same address and
// DataDir. It retries while the port is still held (a closing socket) until ctx ends.
func (b *Broker) Restart(ctx context.Context) error {
	b.Stop()
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return errors.New("devkafka: restart of a closed broker")
	}
	for {
		c, err := b.newCluster()
		if err == nil {
			b.cluster = c
			return nil
		}
		if !errors.Is(err, syscall.EADDRINUSE) {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("devkafka: restart on %s: %w (last: %v)", b.addr, ctx.Err(), err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Close stops the broker for good, and its fault proxy.
func (b *Broker) Close() {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	b.Stop()
	if b.proxy != nil {
		b.proxy.Close()
	}
}

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

// CommittedOffset returns the offset group has committed for partition of topic, that
// is the next record the group will read, or -1 if the group has committed none there.
func (b *Broker) CommittedOffset(ctx context.Context, group, topic string, partition int32) (int64, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(b.Addrs...))
	if err != nil {
		return 0, err
	}
	defer cl.Close()
	req := kmsg.NewPtrOffsetFetchRequest()
	rg := kmsg.NewOffsetFetchRequestGroup()
	rg.Group = group
	rt := kmsg.NewOffsetFetchRequestGroupTopic()
	rt.Topic = topic
	rt.Partitions = []int32{partition}
	rg.Topics = append(rg.Topics, rt)
	req.Groups = append(req.Groups, rg)
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return 0, fmt.Errorf("devkafka: fetch offsets of group %s: %w", group, err)
	}
	for _, g := range resp.Groups {
		if err := kerr.ErrorForCode(g.ErrorCode); err != nil {
			return 0, fmt.Errorf("devkafka: fetch offsets of group %s: %w", group, err)
		}
		for _, t := range g.Topics {
			for _, p := range t.Partitions {
				if t.Topic == topic && p.Partition == partition {
					if err := kerr.ErrorForCode(p.ErrorCode); err != nil {
						return 0, fmt.Errorf("devkafka: offset of group %s on %s/%d: %w", group, topic, partition, err)
					}
					return p.Offset, nil
				}
			}
		}
	}
	return 0, fmt.Errorf("devkafka: no offset of group %s on %s/%d in the answer", group, topic, partition)
}
