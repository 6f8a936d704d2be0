package crypttopic_test

import (
	"context"
	"errors"
	"log"

	"gocloud.dev/pubsub"

	"github.com/pubcrypt/pubcrypt/crypttopic"
	"github.com/pubcrypt/pubcrypt/fault"
)

// A bridge that must not stop on one bad message: a batch refused for faults of some of
// its messages names them in a *BatchError; the bridge dead-letters those and sends the
// others again. Any other error is the environment's: nothing is dropped, the batch is
// retried later.
func ExampleTopic_SendBatch() {
	ctx := context.Background()
	var top *crypttopic.Topic                   // crypttopic.Open(ctx, "kafka://purchases_encrypted", opts)
	var deadLetter func(*pubsub.Message, error) // e.g. send whole-body encrypted to a dead-letter topic
	var batch []*pubsub.Message

	err := top.SendBatch(ctx, batch)
	var be *crypttopic.BatchError
	switch {
	case errors.As(err, &be):
		var rest []*pubsub.Message
		for i, m := range batch {
			if be.Errs[i] != nil {
				deadLetter(m, be.Errs[i]) // the error names the message's index, never its content
				continue
			}
			rest = append(rest, m)
		}
		if err := top.SendBatch(ctx, rest); err != nil {
			log.Printf("batch kept for a retry: %v", err) // an environment fault now
		}
	case fault.ClassOf(err) == fault.Environment:
		log.Printf("outage, batch kept for a retry: %v", err)
	}
}
