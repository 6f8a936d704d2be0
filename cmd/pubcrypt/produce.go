package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
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
		"With --from FILE (- for stdin) it sends your own records instead, in order, one message\n"+
		"per line of JSON:\n"+
		"  {\"body\": VALUE, \"metadata\": {\"k\": \"v\"}, \"key\": \"K\"}   a record: an object with \"body\"\n"+
		"      and no keys but body, metadata and key. A JSON string VALUE is sent as its text,\n"+
		"      any other VALUE as its JSON; metadata values must be strings; the key is sent as\n"+
		"      the metadata entry \"key\" (not as the broker's record key).\n"+
		"  any other JSON value (e.g. {\"id\": 1})   the whole line is the body, no metadata.\n"+
		"  blank lines are skipped.\n"+
		"A line that is not JSON (or a record with bad metadata or key) stops the command with\n"+
		"an error naming the line (exit 4): the lines before it were sent, none after. --count\n"+
		"then limits the messages sent (default: every line).\n\n"+
		"Example: pubcrypt produce --topic kgo://purchases --count 10\n"+
		"         pubcrypt produce --topic kgo://purchases --from - < my.jsonl")
	from := fs.String("from", "", "send the records of this file of JSON lines (- for stdin) instead of generated purchases")
	topicURL := fs.String("topic", "kgo://purchases", "topic URL to send to")
	count := countFlag(fs, new(int), "count", 10, "number of purchases to send (0: until interrupted)")
	interval := durationFlag(fs, new(time.Duration), "interval", 0, "pause between purchases")
	seed := fs.Uint64("seed", uint64(time.Now().UnixNano()), "seed for the generated purchases")
	quiet := fs.Bool("quiet", false, "do not print each purchase")
	var bf brokerFlags
	bf.register(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	bopts, err := bf.options()
	if err != nil {
		return err
	}
	if *from != "" {
		return produceFrom(ctx, fs, *from, *topicURL, *count, *interval, *quiet, bopts, out)
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

// produceFrom is produce --from: the user's own records (records.go).
func produceFrom(ctx context.Context, fs *flag.FlagSet, from, topicURL string, count int, interval time.Duration, quiet bool, bopts broker.Options, out io.Writer) error {
	countSet := false
	var stray error
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "count":
			countSet = true
		case "seed":
			stray = usagef("--seed is for generated purchases, not --from")
		}
	})
	if stray != nil {
		return stray
	}
	if !countSet {
		count = 0 // every line
	}
	var in io.Reader = os.Stdin
	name := "stdin"
	if from != "-" {
		f, err := os.Open(from)
		if err != nil {
			return usagef("--from: %w", err)
		}
		defer f.Close()
		in, name = f, from
	}
	top, err := broker.OpenTopicWith(ctx, topicURL, bopts)
	if err != nil {
		return err
	}
	sent, err := produceRecords(ctx, top, in, count, interval, bopts.Timeout, func(line int, m *pubsub.Message) {
		if !quiet {
			fmt.Fprintf(out, "sent line %d: %d bytes, %d metadata entries\n", line, len(m.Body), len(m.Metadata))
		}
	})
	if serr := shutdown(top); err == nil {
		err = serr
	}
	fmt.Fprintf(out, "%d message(s) from %s sent to %s\n", sent, name, redactURL(topicURL))
	var le *lineError
	if errors.As(err, &le) {
		err = fmt.Errorf("%s %w; the %d message(s) before it were sent, none after (fix it and send from line %d on: tail -n +%d)", name, err, sent, le.line, le.line)
	}
	return err
}
