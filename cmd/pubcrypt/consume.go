package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"

	"gocloud.dev/pubsub"

	"github.com/pubcrypt/pubcrypt/cryptsub"
	"github.com/pubcrypt/pubcrypt/fault"
	"github.com/pubcrypt/pubcrypt/internal/broker"
	"github.com/pubcrypt/pubcrypt/keyring"
)

func runConsume(ctx context.Context, args []string, out io.Writer) error {
	fs := newFlags("consume", "Receives messages from an encrypted topic, decrypts them (bodies and protected fields,\n"+
		"whatever key version they were made under) and prints them.\n\n"+
		"A message that can never be decrypted (tampered with, no envelope, a retired key version)\n"+
		"follows --on-message-fault: by default the command stops with an error naming it. An\n"+
		"outage of Vault (unreachable, token refused, key missing) or of the broker is ridden\n"+
		"out: the message is not acknowledged — nacked where the broker can, held and retried\n"+
		"on Kafka — until it decrypts or --max-outage has gone by. SIGINT or SIGTERM stops\n"+
		"receiving, finishes the batch in flight and exits 0.\n\n"+
		"Example: pubcrypt consume --sub 'kgo://billing?topic=purchases_encrypted&offset=oldest' --max 20")
	subURL := fs.String("sub", "", "subscription URL to read (required)")
	skip := fs.Bool("skip-undecryptable", false, "deprecated: --on-message-fault=skip")
	output := outputFlag(fs)
	var vf vaultFlags
	vf.register(fs)
	var bf brokerFlags
	bf.register(fs)
	var ff faultFlags
	ff.register(fs, "a message that can never be decrypted (tampered with, no envelope, retired key version)", onFaultStop)
	var sf stopFlags
	sf.register(fs, 0, 0)
	var of obsFlags
	of.register(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	obs, err := of.start("consume")
	if err != nil {
		return err
	}
	defer obs.close()
	if err := requireFlag(fs, "sub", *subURL); err != nil {
		return err
	}
	if err := checkOutput(*output); err != nil {
		return err
	}
	if *skip {
		if ff.onMessage != "" && ff.onMessage != onFaultSkip {
			return usagef("--skip-undecryptable contradicts --on-message-fault=%s", ff.onMessage)
		}
		ff.onMessage = onFaultSkip
	}
	onFault, err := ff.policy()
	if err != nil {
		return err
	}
	bopts, err := bf.options()
	if err != nil {
		return err
	}
	kr, err := vf.keyring()
	if err != nil {
		return err
	}
	defer closeKeyring(kr)
	if onFault == onFaultDeadLetter { // dead letters are encrypted under the --vault-key
		if err := checkKeys(ctx, kr, vf.keysFor(nil)); err != nil {
			return err
		}
	}
	c := &consumer{subURL: *subURL, kr: kr, broker: bopts, stop: sf, onFault: onFault, dlURL: ff.deadLetter,
		outage: outage{max: ff.maxOutage, health: obs.health}, out: out, json: *output == outputJSON, log: os.Stderr}
	summary := out
	if c.json {
		summary = os.Stderr // stdout holds messages only
	}
	if err := c.start(ctx); err != nil {
		c.close()
		return err
	}
	obs.started()
	st, err := c.run(ctx)
	c.close()
	fmt.Fprintf(summary, "%d message(s) decrypted", st.decrypted)
	switch onFault {
	case onFaultDeadLetter:
		fmt.Fprintf(summary, ", %d undecryptable dead-lettered to %s", st.deadLettered, redactURL(ff.deadLetter))
	case onFaultSkip:
		fmt.Fprintf(summary, ", %d undecryptable skipped", st.skipped)
	default:
		fmt.Fprintf(summary, ", %d undecryptable", st.skipped+st.deadLettered)
	}
	fmt.Fprintln(summary)
	return err
}

// consumeBatch is how many messages consume receives and decrypts at once: the protected
// fields of a batch cost one Vault call per key, not one per message.
const consumeBatch = 100

type consumeStats struct {
	decrypted, deadLettered, skipped int
}

func (s consumeStats) total() int { return s.decrypted + s.deadLettered + s.skipped }

// consumer receives, decrypts and prints, riding out outages.
type consumer struct {
	subURL  string
	kr      keyring.Keyring
	broker  broker.Options
	stop    stopFlags
	onFault string
	dlURL   string
	outage  outage
	out     io.Writer // decrypted messages
	json    bool      // --output json: one JSON object per message and line on out
	log     io.Writer // messages skipped or dead-lettered

	sub *cryptsub.Subscription // nil after an outage broke it
	dl  *deadLetter
}

func (c *consumer) start(ctx context.Context) error {
	if c.onFault == onFaultDeadLetter {
		var err error
		if c.dl, err = openDeadLetter(ctx, c.dlURL, c.kr, c.broker, c.subURL, "pubcrypt consume"); err != nil {
			return err
		}
	}
	return c.open(ctx)
}

func (c *consumer) open(ctx context.Context) error {
	s, err := broker.OpenSubscriptionWith(ctx, c.subURL, c.broker)
	if err != nil {
		return err
	}
	if c.sub, err = cryptsub.New(s, cryptsub.Options{Keyring: c.kr}); err != nil {
		go shutdown(s)
		return err
	}
	return nil
}

func (c *consumer) close() {
	var all []interface{ Shutdown(context.Context) error }
	if c.sub != nil {
		all = append(all, c.sub)
	}
	if c.dl != nil {
		all = append(all, c.dl.topic)
	}
	shutdownAll(all...)
}

// run prints decrypted messages until c.stop says stop, ctx ends (nil: interrupted
// cleanly), a message fault stops it or an outage lasts past --max-outage.
func (c *consumer) run(ctx context.Context) (consumeStats, error) {
	var st consumeStats
	for !c.stop.done(st.total()) {
		if c.sub == nil {
			if err := c.open(ctx); err != nil {
				if interrupted(ctx, err) {
					return st, nil
				}
				if werr := c.outage.wait(ctx, "open "+redactURL(c.subURL), err); werr != nil {
					return st, stopped(ctx, werr)
				}
				continue
			}
			c.outage.over() // the broker answers again
		}
		size := consumeBatch
		if c.stop.max > 0 {
			size = min(size, c.stop.max-st.total())
		}
		var msgs []*pubsub.Message
		var infos []cryptsub.Info
		var errs []error
		_, err := c.stop.receive(ctx, func(ctx context.Context) (*pubsub.Message, error) {
			msgs, infos, errs = c.sub.ReceiveBatch(ctx, size)
			if msgs[0] == nil { // the subscription failed: no message
				return nil, errs[0]
			}
			return msgs[0], nil
		})
		switch {
		case errors.Is(err, errIdle) || interrupted(ctx, err):
			return st, nil
		case err != nil:
			// A gocloud subscription whose Receive failed stays failed: open a new one.
			go shutdown(c.sub)
			c.sub = nil
			if werr := c.outage.wait(ctx, "receive from "+redactURL(c.subURL), err); werr != nil {
				return st, stopped(ctx, werr)
			}
			continue
		}
		if err := c.handle(ctx, msgs, infos, errs, &st); err != nil {
			return st, stopped(ctx, err)
		}
	}
	return st, nil
}

// handle prints and acknowledges one batch in order. A message whose decryption met a
// fault of the environment is never acknowledged: it is nacked where the broker can
// redeliver it (once per batch the command then waits, so redeliveries are paced by the
// backoff), and otherwise (Kafka) held and decrypted again until it passes, so that the
// messages behind it wait too and the group's offset never passes it.
func (c *consumer) handle(ctx context.Context, msgs []*pubsub.Message, infos []cryptsub.Info, errs []error, st *consumeStats) error {
	wctx, release := drainContext(ctx)
	defer release()
	all := true    // every message of the batch acknowledged: its offsets may be committed
	nacked := 0    // messages given back to the broker for a fault of the environment
	stale := false // a retry went through: the batch's other environment faults may be over too
	var last error
	for i, m := range msgs {
		err := errs[i]
		if err != nil && !fault.IsMessage(err) && m.Nackable() {
			m.Nack() // redelivered later; the wait below paces the redeliveries
			all, nacked, last = false, nacked+1, err
			continue
		}
		if err != nil && !fault.IsMessage(err) && stale {
			infos[i], err = c.sub.Decrypt(wctx, m)
		}
		for err != nil && !fault.IsMessage(err) {
			if werr := c.outage.wait(ctx, "decrypt message "+broker.Position(m), err); werr != nil {
				return werr
			}
			if infos[i], err = c.sub.Decrypt(wctx, m); err == nil {
				stale = true
			}
		}
		if err != nil {
			if err := c.messageFault(ctx, wctx, m, err, st); err != nil {
				return err
			}
			continue
		}
		c.outage.over()
		st.decrypted++
		if err := c.print(m, infos[i]); err != nil {
			return err // not acknowledged: stdout is gone (a closed pipe), nobody sees it
		}
		m.Ack()
	}
	if nacked > 0 {
		return c.outage.wait(ctx, fmt.Sprintf("decrypt %d message(s), nacked", nacked), last)
	}
	if all {
		cctx, cancel := context.WithTimeout(wctx, orDefault(c.broker.Timeout, broker.DefaultTimeout))
		defer cancel()
		_ = broker.Commit(cctx, c.sub.Unwrap(), msgs)
	}
	return nil
}

// messageFault applies the message-fault policy to m, a raw message as received that can
// never be decrypted.
func (c *consumer) messageFault(ctx, wctx context.Context, m *pubsub.Message, reason error, st *consumeStats) error {
	pos := broker.Position(m)
	switch c.onFault {
	case onFaultSkip:
		slog.Warn("message fault: skipped", "id", broker.Position(m), "source", pos, "err", reason.Error())
		fmt.Fprintf(c.log, "skipped: %v\n", reason)
		m.Ack()
		st.skipped++
		return nil
	case onFaultDeadLetter:
		for {
			err := c.dl.send(wctx, m, reason)
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if fault.IsMessage(err) {
				return fmt.Errorf("message %s (%s) cannot be decrypted (%v), and cannot be dead-lettered either; stopped without acknowledging it: %w", broker.Position(m), pos, reason, err)
			}
			if werr := c.outage.wait(ctx, "dead-letter to "+c.dl.url, err); werr != nil {
				return werr
			}
		}
		slog.Warn("message fault: dead-lettered", "id", broker.Position(m), "source", pos, "to", c.dl.url, "err", reason.Error())
		fmt.Fprintf(c.log, "dead-lettered: %v\n", reason)
		m.Ack()
		st.deadLettered++
		return nil
	}
	return fmt.Errorf("stopped without acknowledging message %s (%s; --on-message-fault=skip or dead-letter go on): %w", broker.Position(m), pos, reason)
}

// print writes one decrypted message to c.out.
func (c *consumer) print(m *pubsub.Message, info cryptsub.Info) error {
	if !c.json {
		_, err := fmt.Fprintf(c.out, "[%s v%d] %s\n", info.KeyID, info.KeyVersion, m.Body)
		return err
	}
	j := newJSONMessage(m)
	j.KeyID, j.KeyVersion, j.Fields = info.KeyID, info.KeyVersion, &info.Fields
	return writeJSONLine(c.out, j)
}
