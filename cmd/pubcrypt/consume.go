package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"gocloud.dev/pubsub"

	"github.com/pubcrypt/pubcrypt/cryptsub"
)

func runConsume(ctx context.Context, args []string, out io.Writer) error {
	fs := newFlags("consume", "Receives messages from an encrypted topic, decrypts them (bodies and protected fields,\n"+
		"whatever key version they were made under) and prints them. A message that cannot be\n"+
		"decrypted stops the command with an error naming it, unless --skip-undecryptable.\n\n"+
		"Example: pubcrypt consume --sub 'kafka://billing?topic=purchases_encrypted&offset=oldest' --max 20")
	subURL := fs.String("sub", "", "subscription URL to read (required)")
	skip := fs.Bool("skip-undecryptable", false, "acknowledge and report messages that cannot be decrypted, and go on")
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
	kr, err := vf.keyring()
	if err != nil {
		return err
	}
	sub, err := cryptsub.Open(ctx, *subURL, cryptsub.Options{Keyring: kr})
	if err != nil {
		return err
	}
	defer shutdown(sub)
	n, bad, err := consume(ctx, sub, sf, *skip, out)
	fmt.Fprintf(out, "%d message(s) decrypted, %d undecryptable\n", n, bad)
	return err
}

// consumeBatch is how many messages consume receives and decrypts at once: the protected
// fields of a batch cost one Vault call per key, not one per message.
const consumeBatch = 100

// consume prints decrypted messages until sf says stop.
func consume(ctx context.Context, sub *cryptsub.Subscription, sf stopFlags, skip bool, out io.Writer) (n, bad int, err error) {
	for !sf.done(n + bad) {
		size := consumeBatch
		if sf.max > 0 {
			size = min(size, sf.max-(n+bad))
		}
		var msgs []*pubsub.Message
		var infos []cryptsub.Info
		var errs []error
		_, err := sf.receive(ctx, func(ctx context.Context) (*pubsub.Message, error) {
			msgs, infos, errs = sub.ReceiveBatch(ctx, size)
			if msgs[0] == nil { // the subscription failed: no message
				return nil, errs[0]
			}
			return msgs[0], nil
		})
		switch {
		case errors.Is(err, errIdle) || (ctx.Err() != nil && sf.max == 0):
			return n, bad, nil
		case err != nil:
			return n, bad, err
		}
		for i, m := range msgs {
			var de *cryptsub.DecryptError
			switch err := errs[i]; {
			case errors.As(err, &de) && skip && !de.Retryable():
				bad++
				fmt.Fprintf(os.Stderr, "skipped: %v\n", err)
				de.Message.Ack()
				continue
			case err != nil:
				return n, bad, err
			}
			n++
			fmt.Fprintf(out, "[%s v%d] %s\n", infos[i].KeyID, infos[i].KeyVersion, m.Body)
			m.Ack()
		}
	}
	return n, bad, nil
}
