package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"gocloud.dev/pubsub"

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
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *count < 0 {
		return fmt.Errorf("--count must be 0 or more")
	}
	top, err := broker.OpenTopic(ctx, *topicURL)
	if err != nil {
		return err
	}
	sent, err := producePurchases(ctx, top, purchase.NewGenerator(*seed), *count, *interval, func(p purchase.Purchase) {
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
	sent := 0
	for count == 0 || sent < count {
		p := gen.Next()
		body, err := json.Marshal(p)
		if err != nil {
			return sent, err
		}
		if err := top.Send(ctx, &pubsub.Message{Body: body, Metadata: map[string]string{"order": p.ID}}); err != nil {
			if ctx.Err() != nil && count == 0 {
				return sent, nil
			}
			return sent, fmt.Errorf("send purchase %s: %w", p.ID, err)
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
