package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"time"

	"gocloud.dev/pubsub"

	"github.com/pubcrypt/pubcrypt/crypttopic"
	"github.com/pubcrypt/pubcrypt/fault"
	"github.com/pubcrypt/pubcrypt/internal/broker"
	"github.com/pubcrypt/pubcrypt/kgopubsub"
)

// The exactly-once bridge (encrypt --exactly-once) reads and writes Kafka in
// transactions: a batch's encrypted records, its dead letters and the group's offsets
// after it are committed together by one kgopubsub.Transactor, or not at all. Whatever
// goes wrong in between (Vault refuses, the broker fails, a rebalance, SIGKILL), the
// transaction is aborted and the batch is read again from the committed offsets, so a
// read_committed consumer of the encrypted topic sees each source record once.

// checkExactlyOnce tells what --exactly-once needs, before anything is opened.
func checkExactlyOnce(subURL, topicURL, deadLetter string) error {
	for _, c := range []struct{ flag, url string }{{"sub", subURL}, {"topic", topicURL}, {"dead-letter", deadLetter}} {
		if c.url == "" {
			continue
		}
		u, err := url.Parse(c.url)
		if err != nil || u.Scheme != kgopubsub.Scheme {
			return usagef("--exactly-once reads and writes Kafka transactions through franz-go: --%s must be a %s:// URL", c.flag, kgopubsub.Scheme)
		}
	}
	return nil
}

// defaultTransactionalID is the group's name and the host's: an instance started again
// on its host takes over (and aborts) what it left open at once. Several instances on
// one host need --transactional-id each.
func defaultTransactionalID(subURL string) string {
	group := "pubcrypt"
	if u, err := url.Parse(subURL); err == nil && u.Host != "" {
		group = u.Host + u.Path
	}
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "localhost"
	}
	return "pubcrypt-encrypt-" + group + "-" + host
}

// startTx opens the transactor, the destination and dead-letter topics on it, and checks
// that Vault gives a data key.
func (b *bridger) startTx(ctx context.Context) error {
	tx, err := broker.OpenTransactor(ctx, b.subURL, kgopubsub.TransactOptions{TransactionalID: b.txID}, b.broker)
	if err != nil {
		return err
	}
	b.tx = tx
	open := func(rawURL string, opts crypttopic.Options) (*crypttopic.Topic, error) {
		return openCryptTopicWith(ctx, rawURL, opts, func(ctx context.Context, driverURL string) (*pubsub.Topic, error) {
			return broker.OpenTransactorTopic(ctx, tx, driverURL, b.broker)
		})
	}
	if b.dst, err = open(b.topicURL, b.topicOpts); err != nil {
		return err
	}
	if err := b.dst.Check(ctx); err != nil {
		return err
	}
	if b.onFault == onFaultDeadLetter {
		t, err := open(b.dlURL, crypttopic.Options{Keyring: b.kr})
		if err != nil {
			return fmt.Errorf("--dead-letter: %w", err)
		}
		if b.dl, err = newDeadLetter(ctx, t, b.dlURL, b.subURL, "pubcrypt encrypt"); err != nil {
			return err
		}
	}
	return nil
}

// closeTx closes the topics on the transactor, then the transactor (which aborts what is
// open).
func (b *bridger) closeTx() {
	var all []interface{ Shutdown(context.Context) error }
	if b.dst != nil {
		all = append(all, b.dst)
	}
	if b.dl != nil {
		all = append(all, b.dl.topic)
	}
	shutdownAll(all...)
	b.dst, b.dl = nil, nil
	if b.tx != nil {
		b.tx.Close()
		b.tx = nil
	}
}

// runTx forwards batches in transactions until b.stop says stop, ctx ends, a message
// fault stops it, an outage lasts past --max-outage, or another instance takes over the
// transactional ID.
func (b *bridger) runTx(ctx context.Context) (bridgeStats, error) {
	var st bridgeStats
	// franz-go fetches records in bulk: one window for the whole batch is enough here.
	linger := broker.MaxLinger
	for !b.stop.done(st.total()) {
		if b.tx == nil {
			if err := b.startTx(ctx); err != nil {
				b.closeTx()
				if interrupted(ctx, err) {
					return st, nil
				}
				if werr := b.outage.wait(ctx, "open "+redactURL(b.subURL), err); werr != nil {
					return st, stopped(ctx, werr)
				}
				continue
			}
			b.outage.over()
		}
		batch, err := b.stop.pollTx(ctx, b.tx, b.batchLimit(st.total()), linger)
		switch {
		case errors.Is(err, errIdle) || interrupted(ctx, err):
			return st, nil
		case err != nil:
			b.closeTx()
			if werr := b.outage.wait(ctx, "receive from "+redactURL(b.subURL), err); werr != nil {
				return st, stopped(ctx, werr)
			}
			continue
		}
		done, err := b.forwardTx(ctx, batch)
		switch {
		case err == nil:
			st.forwarded += done.forwarded
			st.deadLettered += done.deadLettered
			st.skipped += done.skipped
			b.outage.over()
		case kgopubsub.Fenced(err):
			// A fault of the setting (two instances, one ID), to mend before running again.
			return st, fault.Mark(fmt.Errorf("another bridge took over transactional ID %q (give each instance its own --transactional-id), or a transaction outlived the transaction timeout: %w", b.txID, err), fault.Environment)
		case errors.Is(err, errRetryBatch):
			// Aborted: the batch is read again, from the committed offsets.
		default:
			return st, stopped(ctx, err)
		}
	}
	return st, nil
}

// pollTx waits for a first record (up to --idle), then takes what arrives within linger.
func (s *stopFlags) pollTx(ctx context.Context, tx *kgopubsub.Transactor, max int, linger time.Duration) ([]*pubsub.Message, error) {
	if s.idle <= 0 {
		return tx.Poll(ctx, max, linger)
	}
	pctx, cancel := context.WithTimeout(ctx, s.idle)
	defer cancel()
	ms, err := tx.Poll(pctx, max, linger)
	if err != nil && ctx.Err() == nil && pctx.Err() != nil {
		return nil, errIdle
	}
	return ms, err
}

// errRetryBatch: the transaction was aborted, and the batch is to be read again.
var errRetryBatch = errors.New("transaction aborted")

// forwardTx protects and sends one batch in a transaction and commits it with the
// source offsets. A batch begun is finished even if ctx ends meanwhile (for up to
// drainTimeout). A fault of the environment aborts the transaction and returns
// errRetryBatch once the outage was waited for; so does a rebalance.
func (b *bridger) forwardTx(ctx context.Context, batch []*pubsub.Message) (bridgeStats, error) {
	var st bridgeStats
	wctx, release := drainContext(ctx)
	defer release()
	abort := func(what string, cause error) error {
		aerr := b.tx.Abort(wctx)
		if kgopubsub.Fenced(cause) || kgopubsub.Fenced(aerr) {
			return fmt.Errorf("%w: %w", kgopubsub.ErrFenced, cause) // opening again would fence the other
		}
		if aerr != nil {
			b.closeTx() // opened again by the next round
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if werr := b.outage.wait(ctx, what, cause); werr != nil {
			return werr
		}
		return errRetryBatch
	}
	first := broker.Position(batch[0])
	if err := b.tx.Begin(); err != nil {
		return st, abort("begin transaction for batch starting at message "+first, err)
	}
	faults, err := b.send(wctx, batch)
	if err != nil {
		return st, abort("send batch starting at message "+first, err)
	}
	var forwarded []*pubsub.Message
	for i, m := range batch {
		if faults[i] != nil {
			if err := b.messageFault(ctx, wctx, m, faults[i], &st); err != nil {
				// --on-message-fault=stop, or a dead letter that cannot be sent: nothing
				// of the batch is committed.
				_ = b.tx.Abort(wctx)
				return st, err
			}
			continue
		}
		forwarded = append(forwarded, m)
	}
	committed, err := b.tx.Commit(wctx)
	if err != nil {
		if kgopubsub.Fenced(err) {
			return st, err
		}
		b.closeTx()
		if werr := b.outage.wait(ctx, "commit batch starting at message "+first, err); werr != nil {
			return st, werr
		}
		return st, errRetryBatch
	}
	if !committed {
		slog.Info("exactly once: a rebalance aborted the transaction; its records are read again", "batch", first)
		return st, errRetryBatch
	}
	for _, m := range forwarded {
		m.Ack()
		st.forwarded++
		if b.each != nil {
			b.each(m)
		}
	}
	return st, nil
}
