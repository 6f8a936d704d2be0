package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"gocloud.dev/pubsub"

	"github.com/pubcrypt/pubcrypt/crypttopic"
	"github.com/pubcrypt/pubcrypt/internal/broker"
)

const defaultFieldPolicy = "name=transit,address=transit,card_number=fpe(bin,luhn),items[].sku=deterministic"

func runEncrypt(ctx context.Context, args []string, out io.Writer) error {
	fs := newFlags("encrypt", "Bridges a plaintext topic to an encrypted one: receives each message, protects it\n"+
		"(chosen JSON fields with --fields, else the whole body) and sends it on. Delivery is\n"+
		"at least once: a source message is acknowledged only after its encrypted copy was\n"+
		"accepted by the broker, so a bridge killed and restarted loses nothing; messages in\n"+
		"flight at the kill may be sent twice.\n\n"+
		"Field policy grammar: path=mode[(options)],... with modes transit, envelope,\n"+
		"deterministic, fpe (options bin, last4, luhn); paths like name, address.city, items[].sku.\n\n"+
		"Example: pubcrypt encrypt --sub 'kafka://pubcrypt-encryptor?topic=purchases&offset=oldest' \\\n"+
		"           --topic kafka://purchases_encrypted --fields '"+defaultFieldPolicy+"'")
	subURL := fs.String("sub", "", "subscription URL of the plaintext source (required)")
	topicURL := fs.String("topic", "", "topic URL of the encrypted destination (required)")
	policy := fs.String("fields", defaultFieldPolicy, "field policy; empty encrypts whole bodies")
	batch := fs.Int("batch", 100, "messages protected together (one Vault call per key per batch)")
	var vf vaultFlags
	vf.register(fs)
	var sf stopFlags
	sf.register(fs, 0, 0)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := requireFlag(fs, "sub", *subURL); err != nil {
		return err
	}
	if err := requireFlag(fs, "topic", *topicURL); err != nil {
		return err
	}
	if *batch < 1 {
		return errors.New("--batch must be at least 1")
	}
	opts := crypttopic.Options{FieldKeys: crypttopic.FieldKeys{Deterministic: vf.detKey, FPE: vf.fpeKey}}
	if *policy != "" {
		p, err := crypttopic.ParseFieldPolicy(*policy)
		if err != nil {
			return fmt.Errorf("--fields: %w", err)
		}
		opts.Fields = p
	}
	kr, err := vf.keyring()
	if err != nil {
		return err
	}
	opts.Keyring = kr
	dst, err := crypttopic.Open(ctx, *topicURL, opts)
	if err != nil {
		return err
	}
	defer shutdown(dst)
	if err := dst.Check(ctx); err != nil { // a refused token fails now, not at the first message
		return err
	}
	src, err := broker.OpenSubscription(ctx, *subURL)
	if err != nil {
		return err
	}
	defer shutdown(src)
	n, err := bridge(ctx, src, dst, bridgeOptions{batch: *batch, stop: sf, each: func(m *pubsub.Message) {
		fmt.Fprintf(out, "encrypted %s\n", m.LoggableID)
	}})
	fmt.Fprintf(out, "%d message(s) encrypted from %s to %s\n", n, *subURL, *topicURL)
	return err
}

type bridgeOptions struct {
	batch  int
	linger time.Duration // how long to wait for a batch to fill once it has a message
	stop   stopFlags
	each   func(*pubsub.Message)
}

// bridge moves messages from src to dst in batches until opts.stop says stop or ctx ends.
// Each batch is sent with one SendBatch (fail closed: all or nothing) and its source
// messages are acked only afterwards, so nothing is lost.
func bridge(ctx context.Context, src *pubsub.Subscription, dst *crypttopic.Topic, opts bridgeOptions) (int, error) {
	if opts.linger == 0 {
		opts.linger = 50 * time.Millisecond
	}
	total := 0
	for !opts.stop.done(total) {
		first, err := opts.stop.receive(ctx, src.Receive)
		if errors.Is(err, errIdle) || (err != nil && ctx.Err() != nil) {
			return total, nil
		}
		if err != nil {
			return total, err
		}
		batch := []*pubsub.Message{first}
		lctx, cancel := context.WithTimeout(ctx, opts.linger)
		for len(batch) < opts.batch && !opts.stop.done(total+len(batch)) {
			m, err := src.Receive(lctx)
			if err != nil {
				break
			}
			batch = append(batch, m)
		}
		cancel()
		out := make([]*pubsub.Message, len(batch))
		for i, m := range batch {
			out[i] = &pubsub.Message{Body: m.Body, Metadata: m.Metadata}
		}
		if err := dst.SendBatch(ctx, out); err != nil {
			// Not acked: the broker redelivers them to the next run of the bridge.
			return total, fmt.Errorf("batch starting at message %s not encrypted, not acknowledged: %w", batch[0].LoggableID, err)
		}
		for _, m := range batch {
			m.Ack()
			if opts.each != nil {
				opts.each(m)
			}
		}
		total += len(batch)
	}
	return total, nil
}
