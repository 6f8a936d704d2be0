package broker

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TopicSpec is a Kafka topic to create: its name and number of partitions.
type TopicSpec struct {
	Name       string
	Partitions int32
}

// ParseTopicSpec reads NAME or NAME:PARTITIONS (default 1 partition).
func ParseTopicSpec(s string) (TopicSpec, error) {
	name, parts, has := strings.Cut(s, ":")
	spec := TopicSpec{Name: name, Partitions: 1}
	if name == "" {
		return spec, fmt.Errorf("topic %q: empty name", s)
	}
	if has {
		n, err := strconv.ParseInt(parts, 10, 32)
		if err != nil || n < 1 {
			return spec, fmt.Errorf("topic %q: partitions must be a whole number, at least 1", s)
		}
		spec.Partitions = int32(n)
	}
	return spec, nil
}

func (t TopicSpec) String() string { return fmt.Sprintf("%s:%d", t.Name, t.Partitions) }

// CreateKafkaTopics creates topics on the cluster of s, with the broker's default
// replication factor, through franz-go's admin client (the same TLS and SASL settings as
// the topics and subscriptions pubcrypt opens). A topic that already exists is no error
// when it has the partitions asked for; with other partitions it is, as nothing is
// changed. It returns the topics created.
func CreateKafkaTopics(ctx context.Context, s KafkaSettings, topics []TopicSpec) ([]TopicSpec, error) {
	adm, err := s.admin()
	if err != nil {
		return nil, err
	}
	defer adm.Close()
	var created []TopicSpec
	for _, t := range topics {
		r, err := adm.CreateTopic(ctx, t.Partitions, -1, nil, t.Name)
		if err == nil {
			err = r.Err
		}
		switch {
		case err == nil:
			created = append(created, t)
		case errors.Is(err, kerr.TopicAlreadyExists):
			if err := samePartitions(ctx, adm, t); err != nil {
				return created, err
			}
		default:
			if r.ErrMessage != "" {
				err = fmt.Errorf("%w: %s", err, r.ErrMessage)
			}
			return created, fmt.Errorf("kafka: create topic %s: %w", t, err)
		}
	}
	return created, nil
}

// admin returns a franz-go admin client for the cluster of s, with the same TLS and SASL
// settings as the topics and subscriptions pubcrypt opens. The caller closes it.
func (s KafkaSettings) admin() (*kadm.Client, error) {
	opts, err := s.KgoOpts(DefaultTimeout)
	if err != nil {
		return nil, err
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("kafka: admin client: %w", err)
	}
	return kadm.NewClient(cl), nil
}

// KafkaEndOffsets returns the end offset (the next offset to be written) of each
// partition of topic, now.
func KafkaEndOffsets(ctx context.Context, s KafkaSettings, topic string) (map[int32]int64, error) {
	adm, err := s.admin()
	if err != nil {
		return nil, err
	}
	defer adm.Close()
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("kafka: end offsets of %s: %w", topic, err)
	}
	out := map[int32]int64{}
	ends.Each(func(o kadm.ListedOffset) { out[o.Partition] = o.Offset })
	return out, nil
}

// KafkaUnread returns how many of the records before ends (KafkaEndOffsets) the consumer
// group has not committed yet on topic: 0 once the group has handled all of them.
func KafkaUnread(ctx context.Context, s KafkaSettings, group, topic string, ends map[int32]int64) (int64, error) {
	adm, err := s.admin()
	if err != nil {
		return 0, err
	}
	defer adm.Close()
	committed, err := adm.FetchOffsets(ctx, group)
	if err == nil {
		err = committed.Error()
	}
	if err != nil {
		return 0, fmt.Errorf("kafka: committed offsets of group %s: %w", group, err)
	}
	var n int64
	for p, end := range ends {
		at := int64(0)
		if o, ok := committed.Lookup(topic, p); ok && o.At > 0 {
			at = o.At
		}
		if end > at {
			n += end - at
		}
	}
	return n, nil
}

// samePartitions checks that an existing topic has the partitions t asks for.
func samePartitions(ctx context.Context, adm *kadm.Client, t TopicSpec) error {
	td, err := adm.ListTopics(ctx, t.Name)
	if err != nil {
		return fmt.Errorf("kafka: topic %s exists; describe it: %w", t.Name, err)
	}
	d, ok := td[t.Name]
	if !ok || d.Err != nil {
		return fmt.Errorf("kafka: topic %s exists but cannot be described: %v", t.Name, d.Err)
	}
	if n := int32(len(d.Partitions)); n != t.Partitions {
		return fmt.Errorf("kafka: topic %s exists with %d partition(s), not %d; nothing changed", t.Name, n, t.Partitions)
	}
	return nil
}
