// Command pubcrypt encrypts streaming data end to end with keys from HashiCorp Vault.
//
//	pubcrypt demo      the whole story on an embedded Kafka broker and Vault dev server
//	pubcrypt produce   plaintext purchases, as an application sends them before pubcrypt
//	pubcrypt encrypt   bridge a plaintext topic to an encrypted one
//	pubcrypt consume   receive and decrypt
//	pubcrypt send-files     encrypt a directory's files and stream them in chunks
//	pubcrypt receive-files  verify and write them; nothing partial ever appears
//	pubcrypt rotate    rotate a Vault transit key
//	pubcrypt peek      what an admin sees on a topic: raw bodies and metadata, no decryption
//
// Run "pubcrypt <command> -h" for a command's flags.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"gocloud.dev/gcerrors"
)

type command struct {
	name, summary string
	run           func(ctx context.Context, args []string, out io.Writer) error
}

var commands = []command{
	{"demo", "run the end-to-end demo on an embedded Kafka broker and a real Vault dev server", runDemo},
	{"dev", "start the embedded Vault dev server and Kafka broker for the other commands", runDev},
	{"produce", "send generated plaintext purchases to a topic (the application before pubcrypt)", runProduce},
	{"encrypt", "bridge a plaintext topic to an encrypted one (chosen fields or whole bodies), at least once", runEncrypt},
	{"consume", "receive, decrypt and print messages of an encrypted topic", runConsume},
	{"send-files", "encrypt the files of a directory with one-use data keys and stream them to a topic", runSendFiles},
	{"receive-files", "receive, verify and write files sent by send-files; nothing partial ever appears", runReceiveFiles},
	{"rotate", "rotate a Vault transit key; producers pick the new version up without a restart", runRotate},
	{"peek", "print what an admin sees on a topic: raw bodies and metadata, no decryption", runPeek},
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "pubcrypt encrypts messages before they reach the broker, with keys from HashiCorp Vault.")
	fmt.Fprintln(w, "\nUsage: pubcrypt <command> [flags]\n\nCommands:")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-14s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nBrokers are named by URL (kafka://purchases, mem://purchases, ...). Vault is configured by")
	fmt.Fprintln(w, "Vault's own variables (VAULT_ADDR, VAULT_TOKEN, VAULT_NAMESPACE, VAULT_CACERT), Kafka by")
	fmt.Fprintln(w, "KAFKA_BROKERS, KAFKA_SASL_USERNAME/KAFKA_SASL_PASSWORD or PUBCRYPT_KAFKA_PROPERTIES (a client.properties file).")
}

func main() {
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if len(os.Args) < 2 || os.Args[1] == "-h" || os.Args[1] == "--help" || os.Args[1] == "help" {
		usage(os.Stdout)
		if len(os.Args) < 2 {
			os.Exit(2)
		}
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	for _, c := range commands {
		if c.name != os.Args[1] {
			continue
		}
		err := c.run(ctx, os.Args[2:], os.Stdout)
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "pubcrypt %s: %v%s\n", c.name, err, hint(err))
			os.Exit(1)
		}
		return
	}
	fmt.Fprintf(os.Stderr, "pubcrypt: unknown command %q\n\n", os.Args[1])
	usage(os.Stderr)
	os.Exit(2)
}

// hint adds what to do for errors whose own text does not say it.
func hint(err error) string {
	if gcerrors.Code(err) == gcerrors.NotFound {
		return " (the topic, subscription or queue does not exist: create it first)"
	}
	return ""
}

// newFlags returns a flag set for a subcommand whose errors are returned, not fatal.
func newFlags(name, synopsis string) *flag.FlagSet {
	fs := flag.NewFlagSet("pubcrypt "+name, flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: pubcrypt %s [flags]\n\n%s\n\nFlags:\n", name, synopsis)
		fs.PrintDefaults()
	}
	return fs
}
