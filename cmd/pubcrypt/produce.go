package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"gocloud.dev/pubsub"

	"github.com/pubcrypt/pubcrypt/fault"
	"github.com/pubcrypt/pubcrypt/internal/broker"
	"github.com/pubcrypt/pubcrypt/internal/purchase"
)

func runProduce(ctx context.Context, args []string, out io.Writer) error {
	fs := newFlags("produce", "Generates realistic purchases (names, addresses, card numbers) and sends them as plain\n"+
		"JSON, the way an existing application does before pubcrypt: anyone who can read the\n"+
		"topic sees them. `pubcrypt encrypt` then bridges them to an encrypted topic.\n\n"+
		"Example: pubcrypt produce --topic kafka://purchases --count 10")
	topicURL := fs.String("topic", "kafka://purchases", "topic URL to send to")
	count := fs.Int("count", 10, "number of purchases to send (0: until interrupted)")
	interval := fs.Duration("interval", 0, "pause between purchases")
	seed := fs.Uint64("seed", uint64(time.Now().UnixNano()), "seed for the generated purchases")
	quiet := fs.Bool("quiet", false, "do not print each purchase")
	var bf brokerFlags
	bf.register(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *count < 0 {
		return usagef("--count must be 0 or more")
	}
	bopts, err := bf.options()
	if err != nil {
		return err
	}
	top, err := broker.OpenTopicWith(ctx, *topicURL, bopts)
	if err != nil {
		return err
	}
	sent, err := producePurchasesWithin(ctx, top, purchase.NewGenerator(*seed), *count, *interval, bopts.Timeout, func(p purchase.Purchase) {
		if !*quiet {
			fmt.Fprintf(out, "sent %s  %-18s card %s  %8.2f %s\n", p.ID, p.Name, p.CardNumber, p.Amount, p.Currency)
		}
	})
	if serr := shutdown(top); err == nil {
		err = serr
	}
	fmt.Fprintf(out, "%d purchase(s) sent to %s\n", sent, *topicURL)
	return err
}

// producePurchases sends count purchases (0: until ctx ends) and reports each.
func producePurchases(ctx context.Context, top *pubsub.Topic, gen *purchase.Generator, count int, interval time.Duration, each func(purchase.Purchase)) (int, error) {
	return producePurchasesWithin(ctx, top, gen, count, interval, 0, each)
}

// producePurchasesWithin is producePurchases with each send bounded by timeout (0: none).
// It stops at the first send that fails: a one-shot command reports the outage.
func producePurchasesWithin(ctx context.Context, top *pubsub.Topic, gen *purchase.Generator, count int, interval, timeout time.Duration, each func(purchase.Purchase)) (int, error) {
	sent := 0
	for count == 0 || sent < count {
		p := gen.Next()
		body, err := json.Marshal(p)
		if err != nil {
			return sent, err
		}
		if err := send(ctx, top, &pubsub.Message{Body: body, Metadata: map[string]string{"order": p.ID}}, timeout); err != nil {
			if ctx.Err() != nil {
				return sent, nil // interrupted: what was sent is reported
			}
			return sent, fault.Mark(fmt.Errorf("send purchase %s: %w", p.ID, err), fault.Environment)
		}
		sent++
		each(p)
		if interval > 0 {
			select {
			case <-time.After(interval):
			case <-ctx.Done():
				return sent, nil
			}
		}
	}
	return sent, nil
}

// send sends m within timeout (0: as long as ctx lasts).
func send(ctx context.Context, top *pubsub.Topic, m *pubsub.Message, timeout time.Duration) error {
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	return top.Send(ctx, m)
}
