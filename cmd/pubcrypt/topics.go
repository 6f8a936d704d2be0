package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/pubcrypt/pubcrypt/internal/broker"
)

func runTopics(ctx context.Context, args []string, out io.Writer) error {
	if len(args) == 0 || args[0] != "create" {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
			fmt.Fprintln(out, "Usage: pubcrypt topics create [flags] NAME[:PARTITIONS]...")
			return nil
		}
		what := "no subcommand"
		if len(args) > 0 {
			what = fmt.Sprintf("unknown subcommand %q", args[0])
		}
		return usagef("topics: %s: pubcrypt topics create [flags] NAME[:PARTITIONS]...", what)
	}
	fs := newFlags("topics create", "Creates Kafka topics, NAME with 1 partition or NAME:PARTITIONS, with the broker's\n"+
		"default replication factor. A topic that already exists with those partitions is no\n"+
		"error; with other partitions it is, and nothing is changed. The brokers, TLS and SASL\n"+
		"come from the same variables as kgo:// and kafka:// URLs (KAFKA_BROKERS, KAFKA_SASL_USERNAME/\n"+
		"KAFKA_SASL_PASSWORD, PUBCRYPT_KAFKA_PROPERTIES, ...); --brokers overrides the brokers.\n"+
		"Flags come before the names.\n\n"+
		"Example: pubcrypt topics create --brokers 127.0.0.1:9092 orders:3 orders_encrypted:3")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: pubcrypt topics create [flags] NAME[:PARTITIONS]...\n\n")
		fs.PrintDefaults()
	}
	brokers := fs.String("brokers", "", "comma-separated host:port list of Kafka brokers (default: $KAFKA_BROKERS)")
	timeout := durationFlag(fs, new(time.Duration), "timeout", 30*time.Second, "longest wait for the brokers (0: no limit)")
	names, err := parseArgs(fs, args[1:])
	if err != nil {
		return err
	}
	specs, err := topicSpecs(names)
	if err != nil {
		return err
	}
	if len(specs) == 0 {
		return usagef("topics create: name at least one topic: NAME[:PARTITIONS]...")
	}
	if *brokers != "" { // as if in the environment, so the rest of it still applies
		if err := os.Setenv(broker.EnvKafkaBrokers, *brokers); err != nil {
			return err
		}
	}
	s, err := broker.KafkaSettingsFromEnv()
	if err != nil {
		return usagef("%w", err)
	}
	if *timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *timeout)
		defer cancel()
	}
	created, err := broker.CreateKafkaTopics(ctx, s, specs)
	for _, t := range created {
		fmt.Fprintf(out, "created topic %s with %d partition(s)\n", t.Name, t.Partitions)
	}
	if err != nil {
		return err
	}
	if n := len(specs) - len(created); n > 0 {
		fmt.Fprintf(out, "%d topic(s) already there with the partitions asked for\n", n)
	}
	return nil
}

// topicSpecs parses NAME[:PARTITIONS] arguments.
func topicSpecs(args []string) ([]broker.TopicSpec, error) {
	var specs []broker.TopicSpec
	for _, a := range args {
		t, err := broker.ParseTopicSpec(a)
		if err != nil {
			return nil, usagef("%w", err)
		}
		specs = append(specs, t)
	}
	return specs, nil
}
