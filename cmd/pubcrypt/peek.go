package main

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	"gocloud.dev/pubsub"

	"github.com/pubcrypt/pubcrypt/fault"
	"github.com/pubcrypt/pubcrypt/internal/broker"
)

func runPeek(ctx context.Context, args []string, out io.Writer) error {
	fs := newFlags("peek", "Prints the raw messages of a subscription as an admin of the broker sees them:\n"+
		"metadata (headers) and body, without decrypting anything. Messages are not acknowledged.\n"+
		"The text output shortens long values; --output json prints them whole.\n\n"+
		"Example: pubcrypt peek --sub 'kgo://peek?topic=purchases_encrypted&offset=oldest'")
	subURL := fs.String("sub", "", "subscription URL to read (required)")
	max := countFlag(fs, new(int), "max", 10, "stop after this many messages (0: no limit)")
	wait := durationFlag(fs, new(time.Duration), "wait", 3*time.Second, "stop when no message arrives for this long (0: wait forever)")
	output := outputFlag(fs)
	var bf brokerFlags
	bf.register(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := requireFlag(fs, "sub", *subURL); err != nil {
		return err
	}
	if err := checkOutput(*output); err != nil {
		return err
	}
	bopts, err := bf.options()
	if err != nil {
		return err
	}
	sub, err := broker.OpenSubscriptionWith(ctx, *subURL, bopts)
	if err != nil {
		return err
	}
	defer shutdown(sub)
	summary := out
	if *output == outputJSON {
		summary = os.Stderr // stdout holds messages only
	}
	n, err := peekEach(ctx, sub, *max, *wait, func(m *pubsub.Message, n int) error {
		if *output == outputJSON {
			return writeJSONLine(out, newJSONMessage(m))
		}
		printRaw(out, n, m)
		return nil
	})
	fmt.Fprintf(summary, "%d message(s)\n", n)
	return err
}

// peek reads up to max raw messages (0: no limit), stopping early when none arrives for
// wait (0: waits as long as ctx lasts). Messages are nacked, once the peek is done, where the broker allows it
// and otherwise left unacknowledged.
func peek(ctx context.Context, sub *pubsub.Subscription, max int, wait time.Duration) ([]*pubsub.Message, error) {
	var msgs []*pubsub.Message
	_, err := peekEach(ctx, sub, max, wait, func(m *pubsub.Message, _ int) error {
		msgs = append(msgs, m)
		return nil
	})
	return msgs, err
}

// peekEach is peek handing each message, and its number from 1, to each as it arrives; it
// returns how many it handed.
func peekEach(ctx context.Context, sub *pubsub.Subscription, max int, wait time.Duration, each func(*pubsub.Message, int) error) (int, error) {
	n := 0
	// Nacked at the end, not as they come: a driver that redelivers a nacked message at
	// once, ahead of the rest of its partition (kgo://), would hand the peek the same
	// message again and again.
	var held []*pubsub.Message
	defer func() {
		for _, m := range held {
			m.Nack()
		}
	}()
	for max == 0 || n < max {
		rctx, cancel := ctx, context.CancelFunc(func() {})
		if wait > 0 {
			rctx, cancel = context.WithTimeout(ctx, wait)
		}
		m, err := sub.Receive(rctx)
		cancel()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, context.DeadlineExceeded) {
				return n, nil // interrupted, or nothing more within wait
			}
			return n, fault.Mark(fmt.Errorf("receive: %w", err), fault.Environment)
		}
		if m.Nackable() {
			held = append(held, m)
		}
		n++
		if err := each(m, n); err != nil {
			return n, err
		}
	}
	return n, nil
}

// printRaw shows one message the way a broker's admin console does.
func printRaw(w io.Writer, n int, m *pubsub.Message) {
	fmt.Fprintf(w, "  #%d  %d bytes\n", n, len(m.Body))
	keys := make([]string, 0, len(m.Metadata))
	for k := range m.Metadata {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(w, "      header %-14s %s\n", k, shorten(m.Metadata[k], 72))
	}
	fmt.Fprintf(w, "      body   %s\n", preview(m.Body, 72))
}

func preview(b []byte, n int) string {
	if utf8.Valid(b) && !strings.ContainsFunc(string(b), func(r rune) bool { return r < 0x20 && r != '\t' }) {
		return shorten(string(b), n)
	}
	return "(binary) base64:" + shorten(base64.StdEncoding.EncodeToString(b), n-16)
}

func shorten(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-1] + "…"
}
