package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"time"

	"gocloud.dev/pubsub"

	"github.com/pubcrypt/pubcrypt/crypttopic"
	"github.com/pubcrypt/pubcrypt/fault"
	"github.com/pubcrypt/pubcrypt/internal/broker"
	"github.com/pubcrypt/pubcrypt/keyring"
	"github.com/pubcrypt/pubcrypt/kgopubsub"
)

const defaultFieldPolicy = "name=transit,address=transit,card_number=fpe(bin,luhn),items[].sku=deterministic"

func runEncrypt(ctx context.Context, args []string, out io.Writer) error {
	fs := newFlags("encrypt", "Bridges a plaintext topic to an encrypted one: receives each message, protects it\n"+
		"(chosen JSON fields with --fields, else the whole body) and sends it on. Delivery is\n"+
		"at least once: a source message is acknowledged only after its encrypted copy was\n"+
		"accepted by the broker, and on Kafka the group's offset is committed after every\n"+
		"batch, so a bridge killed and restarted loses nothing and sends again at most the\n"+
		"batch it was sending (--batch messages).\n\n"+
		"Exactly once (--exactly-once, Kafka through kgo:// only): each batch is read, encrypted\n"+
		"and written in one Kafka transaction that also commits the group's offsets, so a\n"+
		"read_committed consumer (kgo:// subscriptions are, by default) sees every source record\n"+
		"once, across kills and rebalances: a transaction cut short is aborted and its batch read\n"+
		"again. Each instance needs its own --transactional-id, kept across its restarts.\n\n"+
		"An outage of Vault or of the broker is ridden out: nothing is acknowledged, the batch\n"+
		"is retried with backoff (200ms doubling to 30s) and the subscription or topic reopened,\n"+
		"until it passes or --max-outage has gone by. A message that can never be protected (not\n"+
		"JSON, a field of the wrong type) follows --on-message-fault. SIGINT or SIGTERM stops\n"+
		"receiving, finishes the batch in flight and exits 0.\n\n"+
		"Field policy grammar: path=mode[(options)],... with modes transit, envelope,\n"+
		"deterministic, fpe (options bin, last4, luhn; vault: FF1 inside Vault's FPE plugin,\n"+
		"see --vault-fpe-mount); paths like name, address.city, items[].sku,\n"+
		"with wildcards * (any member) and ** (any depth): **.card_number, items[].*.\n"+
		"Deny by default: clauses separated by ';' protect every value no rule names with a\n"+
		"default mode, except what keep= names, so a field added upstream is never sent in clear:\n"+
		"  --fields 'default=envelope; keep=order_id,created_at,items[].sku; **.card_number=fpe(bin,luhn)'\n"+
		"A JSON body that is not an object (an array, a string) is encrypted whole; add\n"+
		"unmatched=refuse to treat it as a message fault, or unmatched=clear to send it readable.\n"+
		"Consumers need no policy: the message says what is protected.\n\n"+
		"Example: pubcrypt encrypt --sub 'kgo://pubcrypt-encryptor?topic=purchases&offset=oldest' \\\n"+
		"           --topic kgo://purchases_encrypted --fields '"+defaultFieldPolicy+"' \\\n"+
		"           --dead-letter kgo://purchases_dead_letter")
	subURL := fs.String("sub", "", "subscription URL of the plaintext source (required)")
	topicURL := fs.String("topic", "", "topic URL of the encrypted destination (required)")
	policy := fs.String("fields", defaultFieldPolicy, "field policy, an allow-list or deny by default (default=MODE; keep=...); empty encrypts whole bodies")
	batch := fs.Int("batch", 100, "messages protected together (one Vault call per key per batch)")
	exactlyOnce := fs.Bool("exactly-once", false, "read and write in Kafka transactions (kgo:// source, destination and dead-letter topic): the encrypted records of a batch and the group's offsets after it are committed together, so a read_committed consumer sees every source record exactly once across crashes and rebalances (default: at least once)")
	txID := fs.String("transactional-id", "", "with --exactly-once, this instance's transactional ID, kept across restarts and different for each instance (default pubcrypt-encrypt-GROUP-HOSTNAME)")
	partition := fs.String("partition", "source", "where records go on a kgo:// destination: source (the partition number each came from, modulo the destination's: per-key and per-partition order kept without reading keys) or broker (the destination's partitioner); a destination URL with key_name, key_field or partitioner decides itself")
	recordKey := fs.String("record-key", recordKeyDeterministic, "the source record's Kafka key on a Kafka destination: deterministic (encrypted, equal keys give equal record keys, so partitioning and compaction work; consumers read it with key_name=key, or the destination URL's key_name), clear (readable on the broker, authenticated) or drop (no key)")
	var vf vaultFlags
	vf.register(fs)
	var bf brokerFlags
	bf.register(fs)
	var ff faultFlags
	ff.register(fs, "a source message that cannot be protected (not JSON, a field of the wrong type)", onFaultStop)
	var sf stopFlags
	sf.register(fs, 0, 0)
	var of obsFlags
	of.register(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	obs, err := of.start("encrypt")
	if err != nil {
		return err
	}
	defer obs.close()
	if err := requireFlag(fs, "sub", *subURL); err != nil {
		return err
	}
	if *partition != "source" && *partition != "broker" {
		return usagef("--partition must be source or broker, not %q", *partition)
	}
	if err := requireFlag(fs, "topic", *topicURL); err != nil {
		return err
	}
	if *batch < 1 {
		return usagef("--batch must be at least 1")
	}
	if *exactlyOnce {
		if err := checkExactlyOnce(*subURL, *topicURL, ff.deadLetter); err != nil {
			return err
		}
		if *txID == "" {
			*txID = defaultTransactionalID(*subURL)
		}
	} else if *txID != "" {
		return usagef("--transactional-id needs --exactly-once")
	}
	onFault, err := ff.policy()
	if err != nil {
		return err
	}
	bopts, err := bf.options()
	if err != nil {
		return err
	}
	opts := crypttopic.Options{FieldKeys: crypttopic.FieldKeys{Deterministic: vf.detKey, FPE: vf.fpeKey}}
	if *policy != "" {
		p, err := crypttopic.ParseFieldPolicy(*policy)
		if err != nil {
			return usagef("--fields: %w", err)
		}
		opts.Fields = p
	}
	kr, err := vf.keyring()
	if err != nil {
		return err
	}
	defer closeKeyring(kr)
	if err := checkKeys(ctx, kr, vf.keysFor(opts.Fields)); err != nil {
		return err
	}
	opts.Keyring = kr
	dstURL, keep := *topicURL, false
	if *partition == "source" {
		dstURL, keep = sourcePartitions(dstURL)
	}
	dstURL, keyEntry, err := recordKeyDestination(dstURL, *recordKey, &opts)
	if err != nil {
		return err
	}
	b := &bridger{
		subURL: *subURL, topicURL: dstURL, keepPartition: keep, keyEntry: keyEntry, topicOpts: opts, broker: bopts, kr: kr, vaultTimeout: vf.timeout,
		exactlyOnce: *exactlyOnce, txID: *txID,
		batch: *batch, stop: sf, onFault: onFault, dlURL: ff.deadLetter,
		outage: outage{max: ff.maxOutage, health: obs.health},
		each:   func(m *pubsub.Message) { countForwarded(); fmt.Fprintf(out, "encrypted %s\n", broker.Position(m)) },
		faulty: func(verb string, m *pubsub.Message, err error) {
			countBridgeFault(verb)
			fmt.Fprintf(out, "%s %s: %v\n", verb, broker.Position(m), err)
		},
	}
	mode := "at least once"
	start, run, stop := b.start, b.run, b.close
	if *exactlyOnce {
		mode = "exactly once, transactional ID " + *txID
		start, run, stop = b.startTx, b.runTx, b.closeTx
	}
	if err := start(ctx); err != nil {
		stop()
		return err
	}
	obs.started()
	st, err := run(ctx)
	stop()
	fmt.Fprintf(out, "%d message(s) encrypted from %s to %s (%s)", st.forwarded, redactURL(*subURL), redactURL(*topicURL), mode)
	if st.deadLettered > 0 || onFault == onFaultDeadLetter {
		fmt.Fprintf(out, ", %d dead-lettered to %s", st.deadLettered, redactURL(ff.deadLetter))
	}
	if st.skipped > 0 || onFault == onFaultSkip {
		fmt.Fprintf(out, ", %d skipped", st.skipped)
	}
	fmt.Fprintln(out)
	return err
}

type bridgeStats struct {
	forwarded, deadLettered, skipped int
}

func (s bridgeStats) total() int { return s.forwarded + s.deadLettered + s.skipped }

// bridger moves messages from a source subscription to an encrypted topic in batches,
// riding out outages and applying the message-fault policy.
type bridger struct {
	subURL, topicURL string
	keepPartition    bool   // each record to the partition number it came from (--partition=source)
	keyEntry         string // the entry that carries each source record's key (--record-key), "" for none
	exactlyOnce      bool   // in Kafka transactions (exactlyonce.go)
	txID             string // the transactional ID, with exactlyOnce
	topicOpts        crypttopic.Options
	broker           broker.Options
	kr               keyring.Keyring
	vaultTimeout     time.Duration
	batch            int
	stop             stopFlags
	onFault          string
	dlURL            string
	outage           outage
	// prepare, if set, turns out, copies of the source messages src, into the messages to
	// send, in place (reencrypt decrypts them): faults[i] for a message that can never be
	// sent, err for a fault of the environment (the whole batch is tried again).
	prepare func(ctx context.Context, src, out []*pubsub.Message) (faults []error, err error)
	each    func(*pubsub.Message)                           // a message forwarded
	faulty  func(verb string, m *pubsub.Message, err error) // a message dead-lettered or skipped

	// Opened by start (or startTx), reopened after an outage broke them (nil until then).
	tx  *kgopubsub.Transactor // exactly once: the source, and the client of dst and dl
	src *pubsub.Subscription
	dst *crypttopic.Topic
	dl  *deadLetter
}

// start opens everything and checks what can be checked — the topics exist, Vault answers
// and gives a data key — so that a wrong setting is an error now, not at the first
// message. Outages are ridden out only once the bridge has started.
func (b *bridger) start(ctx context.Context) error {
	var err error
	if b.dst, err = openCryptTopic(ctx, b.topicURL, b.topicOpts, b.broker); err != nil {
		return err
	}
	if err := b.dst.Check(ctx); err != nil { // a refused token fails now, not at the first message
		return err
	}
	if b.onFault == onFaultDeadLetter {
		if b.dl, err = openDeadLetter(ctx, b.dlURL, b.kr, b.broker, b.subURL, "pubcrypt encrypt"); err != nil {
			return err
		}
	}
	b.src, err = broker.OpenSubscriptionWith(ctx, b.subURL, b.broker)
	return err
}

// close shuts everything down at once, all within shutdownTimeout: one after the other,
// a broker that does not answer held the exit for that long per topic.
func (b *bridger) close() {
	var all []interface{ Shutdown(context.Context) error }
	if b.src != nil {
		all = append(all, b.src)
	}
	if b.dst != nil {
		all = append(all, b.dst)
	}
	if b.dl != nil {
		all = append(all, b.dl.topic)
	}
	shutdownAll(all...)
}

// run forwards batches until b.stop says stop, ctx ends (nil: interrupted cleanly), a
// message fault stops it (--on-message-fault=stop) or an outage lasts past --max-outage.
func (b *bridger) run(ctx context.Context) (bridgeStats, error) {
	var st bridgeStats
	for !b.stop.done(st.total()) {
		if b.src == nil {
			src, err := broker.OpenSubscriptionWith(ctx, b.subURL, b.broker)
			if err != nil {
				if interrupted(ctx, err) {
					return st, nil
				}
				if werr := b.outage.wait(ctx, "open "+redactURL(b.subURL), err); werr != nil {
					return st, stopped(ctx, werr)
				}
				continue
			}
			b.src = src
			b.outage.over() // the broker answers again
		}
		batch, err := b.receive(ctx, st.total())
		switch {
		case errors.Is(err, errIdle) || interrupted(ctx, err):
			return st, nil
		case err != nil:
			// A gocloud subscription whose Receive failed stays failed: open a new one.
			// Messages it delivered and nobody acknowledged come again from the new one.
			go shutdown(b.src)
			b.src = nil
			if werr := b.outage.wait(ctx, "receive from "+redactURL(b.subURL), err); werr != nil {
				return st, stopped(ctx, werr)
			}
			continue
		}
		if err := b.forward(ctx, batch, &st); err != nil {
			return st, stopped(ctx, err)
		}
	}
	return st, nil
}

// stopped is nil when err only says that the command was interrupted.
func stopped(ctx context.Context, err error) error {
	if interrupted(ctx, err) {
		return nil
	}
	return err
}

// receive waits for a first message (up to --idle), then gathers more as every receive
// path does (broker.Gather), up to the batch size and --max; a failed subscription only
// ends the batch, and the next receive reports it.
func (b *bridger) receive(ctx context.Context, total int) ([]*pubsub.Message, error) {
	first, err := b.stop.receive(ctx, b.src.Receive)
	if err != nil {
		return nil, err
	}
	return broker.Gather(ctx, b.src, first, b.batchLimit(total)), nil
}

// batchLimit is how many messages the next batch may hold after total were handled: the
// batch size, or what --max leaves if that is less.
func (b *bridger) batchLimit(total int) int {
	if b.stop.max > 0 {
		return min(b.batch, b.stop.max-total)
	}
	return b.batch
}

// forward protects and sends one batch, then acknowledges it and commits its offsets. A
// batch begun is finished even if ctx ends meanwhile (for up to drainTimeout), so that an
// interrupt does not cut it in half; while the environment fails nothing is acknowledged
// and the batch is retried as a whole.
func (b *bridger) forward(ctx context.Context, batch []*pubsub.Message, st *bridgeStats) error {
	wctx, release := drainContext(ctx)
	defer release()
	var faults []error
	for {
		var err error
		faults, err = b.send(wctx, batch)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return ctx.Err() // interrupted: not acknowledged, delivered again to the next run
		}
		// The outage is logged, and --max-outage checked, before the reopen below: a
		// reopen that hangs on a silent broker must not delay either by a broker timeout.
		if werr := b.outage.wait(ctx, fmt.Sprintf("send batch starting at message %s", broker.Position(batch[0])), err); werr != nil {
			return werr
		}
		if !keyService(err) {
			// Not Vault: the destination broker. Reopen the topic, in case its client is
			// the part that broke; a new one starts from fresh connections.
			b.reopenDst(ctx)
		}
	}
	for i, m := range batch {
		if faults[i] != nil {
			continue
		}
		m.Ack()
		st.forwarded++
		if b.each != nil {
			b.each(m)
		}
	}
	for i, m := range batch {
		if faults[i] == nil {
			continue
		}
		if err := b.messageFault(ctx, wctx, m, faults[i], st); err != nil {
			return err
		}
	}
	b.outage.over()
	cctx, cancel := context.WithTimeout(wctx, orDefault(b.broker.Timeout, broker.DefaultTimeout))
	defer cancel()
	_ = broker.Commit(cctx, b.src, batch) // a failed commit only means redelivery
	return nil
}

// messageFault applies the message-fault policy to m, which can never be protected.
func (b *bridger) messageFault(ctx, wctx context.Context, m *pubsub.Message, reason error, st *bridgeStats) error {
	pos := broker.Position(m)
	switch b.onFault {
	case onFaultSkip:
		slog.Warn("message fault: skipped", "id", broker.Position(m), "source", pos, "err", reason.Error())
		m.Ack()
		st.skipped++
		if b.faulty != nil {
			b.faulty("skipped", m, reason)
		}
		return nil
	case onFaultDeadLetter:
		for {
			err := b.dl.send(wctx, m, reason)
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if fault.IsMessage(err) { // the dead letter itself cannot be made: never drop
				return fmt.Errorf("message %s (%s) cannot be protected (%v), and cannot be dead-lettered either; stopped without acknowledging it: %w", broker.Position(m), pos, reason, err)
			}
			if werr := b.outage.wait(ctx, "dead-letter to "+b.dl.url, err); werr != nil {
				return werr
			}
		}
		slog.Warn("message fault: dead-lettered", "id", broker.Position(m), "source", pos, "to", b.dl.url, "err", reason.Error())
		m.Ack()
		st.deadLettered++
		if b.faulty != nil {
			b.faulty("dead-lettered", m, reason)
		}
		return nil
	}
	return fmt.Errorf("message %s (%s) cannot be protected; stopped without acknowledging it (--on-message-fault=stop; dead-letter or skip go on): %w", broker.Position(m), pos, reason)
}

// send protects and sends batch. It returns, for each message, nil if it was sent or the
// fault of that message (it will never pass); or an error of the environment, and then
// the whole batch is to be tried again.
func (b *bridger) send(ctx context.Context, batch []*pubsub.Message) ([]error, error) {
	tctx, cancel := b.outage.bound(ctx, b.opTimeout())
	defer cancel()
	faults := make([]error, len(batch))
	idx := make([]int, len(batch)) // position in batch of each message still to send
	out := make([]*pubsub.Message, len(batch))
	for i, m := range batch {
		idx[i], out[i] = i, &pubsub.Message{Body: m.Body, Metadata: withRecordKey(m, b.keyEntry)}
		if b.keepPartition {
			broker.KeepPartition(out[i], m)
		}
	}
	if b.prepare != nil {
		pf, err := b.prepare(tctx, batch, out)
		if err != nil {
			return nil, err
		}
		var rest []*pubsub.Message
		var restIdx []int
		for j, e := range pf {
			if e != nil {
				faults[idx[j]] = e
			} else {
				rest, restIdx = append(rest, out[j]), append(restIdx, idx[j])
			}
		}
		out, idx = rest, restIdx
	}
	for len(out) > 0 {
		err := b.dst.SendBatch(tctx, out)
		if err == nil {
			return faults, nil
		}
		var be *crypttopic.BatchError
		switch {
		case errors.As(err, &be) && len(be.Errs) == len(out):
			// Nothing was sent; the messages at fault are named: send the others again.
			var rest []*pubsub.Message
			var restIdx []int
			for j, e := range be.Errs {
				if e != nil {
					// "message 3: ..." counts within the batch sent, which means
					// nothing in a log or a dead letter: keep what it wraps.
					if u := errors.Unwrap(e); u != nil && fault.IsMessage(u) {
						e = u
					}
					faults[idx[j]] = e
				} else {
					rest, restIdx = append(rest, out[j]), append(restIdx, idx[j])
				}
			}
			if len(rest) == len(out) { // blames nobody after all: not a message's fault
				return nil, err
			}
			out, idx = rest, restIdx
		case fault.IsMessage(err):
			// A fault of some message that the error does not name: find it, one at a time.
			for j, m := range out {
				if err := b.dst.Send(tctx, m); err != nil {
					if !fault.IsMessage(err) {
						return nil, err
					}
					faults[idx[j]] = err
				}
			}
			return faults, nil
		default:
			return nil, err
		}
	}
	return faults, nil
}

// opTimeout bounds one attempt at a batch: Vault's answers and the broker's.
func (b *bridger) opTimeout() time.Duration {
	return orDefault(b.broker.Timeout, broker.DefaultTimeout) + orDefault(b.vaultTimeout, 10*time.Second)
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// reopenDst replaces the destination topic with a new one, if one can be opened now.
func (b *bridger) reopenDst(ctx context.Context) {
	ctx, cancel := b.outage.bound(ctx, orDefault(b.broker.Timeout, broker.DefaultTimeout))
	defer cancel()
	dst, err := openCryptTopic(ctx, b.topicURL, b.topicOpts, b.broker)
	if err != nil {
		return // still down: the next attempt tries again
	}
	go shutdown(b.dst)
	b.dst = dst
}

// keyService reports whether err came from the key service rather than the broker.
func keyService(err error) bool {
	var ke *keyring.Error
	return errors.As(err, &ke)
}

// sourcePartitions adds partitioner=record to a kgo:// destination whose URL does not say
// how records are partitioned, and reports whether it did: the bridge then sends each
// record to the partition number it came from (broker.KeepPartition).
func sourcePartitions(rawURL string) (string, bool) {
	u, err := url.Parse(rawURL)
	if err != nil || u.Scheme != "kgo" {
		return rawURL, false
	}
	q := u.Query()
	if q.Has("partitioner") || q.Has("key_name") || q.Has("key_field") {
		return rawURL, false
	}
	q.Set("partitioner", "record")
	u.RawQuery = q.Encode()
	return u.String(), true
}
