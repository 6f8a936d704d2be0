package broker

import (
	"context"
	"time"

	"gocloud.dev/pubsub"
)

const (
	// Linger is how long Gather waits for each further message of a batch.
	Linger = 10 * time.Millisecond
	// MaxLinger bounds the whole of Gather's wait: no message waits longer than this in
	// a batch that is being filled.
	MaxLinger = 50 * time.Millisecond
)

// Gather returns first followed by up to max-1 more messages from sub, taking each one
// that arrives within Linger of the one before, for MaxLinger at most. A backlog therefore
// fills whole batches even on a driver that hands messages over one at a time (gocloud's
// kafka:// driver does, and on a loaded machine 100 of them take longer than one
// Linger), while an idle or trickling subscription ends its batch after one Linger.
// Gather stops early, without an error, when ctx ends or the subscription fails; the
// caller's next Receive reports it.
func Gather(ctx context.Context, sub *pubsub.Subscription, first *pubsub.Message, max int) []*pubsub.Message {
	msgs := []*pubsub.Message{first}
	if max <= 1 {
		return msgs
	}
	bctx, cancel := context.WithTimeout(ctx, MaxLinger)
	defer cancel()
	for len(msgs) < max {
		mctx, cancel := context.WithTimeout(bctx, Linger)
		m, err := sub.Receive(mctx)
		cancel()
		if err != nil {
			break
		}
		msgs = append(msgs, m)
	}
	return msgs
}
