// Command pubcrypt encrypts streaming data end to end with keys from HashiCorp Vault.
//
//	pubcrypt demo      the whole story on an embedded Kafka broker and Vault dev server
//	pubcrypt produce   plaintext purchases, as an application sends them before pubcrypt
//	pubcrypt encrypt   bridge a plaintext topic to an encrypted one
//	pubcrypt consume   receive and decrypt
//	pubcrypt send-files     encrypt a directory's files and stream them in chunks
//	pubcrypt receive-files  verify and write them; nothing partial ever appears
//	pubcrypt rotate    rotate a Vault transit key
//	pubcrypt reencrypt re-protect a retained topic under the latest key versions
//	pubcrypt peek      what an admin sees on a topic: raw bodies and metadata, no decryption
//	pubcrypt topics    create Kafka topics
//	pubcrypt version   the version (also pubcrypt --version)
//
// Run "pubcrypt <command> -h" for a command's flags. Exit statuses: 0 done or cleanly
// interrupted, 1 error, 2 usage, 3 fault of the environment, 4 fault of a message (see
// usage and the README).
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
	"strings"
	"syscall"
	"time"

	"gocloud.dev/gcerrors"

	"github.com/pubcrypt/pubcrypt/fault"
	"github.com/pubcrypt/pubcrypt/internal/broker"
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
	{"forget", "crypto-shred subjects: destroy the keys of their messages, so those fail with ErrShredded", runForget},
	{"reencrypt", "re-protect a retained encrypted topic under the latest key versions, onto another topic", runReencrypt},
	{"peek", "print what an admin sees on a topic: raw bodies and metadata, no decryption", runPeek},
	{"topics", "create Kafka topics: pubcrypt topics create NAME[:PARTITIONS]...", runTopics},
	{"version", "print the version of pubcrypt and of Go (also: pubcrypt --version)", runVersion},
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "pubcrypt encrypts messages before they reach the broker, with keys from HashiCorp Vault.")
	fmt.Fprintln(w, "\nUsage: pubcrypt <command> [flags]\n\nCommands:")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-14s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nBrokers are named by URL (kgo://purchases for Kafka through franz-go, the default; kafka://purchases")
	fmt.Fprintln(w, "through gocloud's kafkapubsub; mem://purchases, ...). Vault is configured by")
	fmt.Fprintln(w, "Vault's own variables (VAULT_ADDR, VAULT_TOKEN, VAULT_NAMESPACE, VAULT_CACERT), Kafka by")
	fmt.Fprintln(w, "KAFKA_BROKERS, KAFKA_SASL_USERNAME/KAFKA_SASL_PASSWORD/KAFKA_SASL_MECHANISM or PUBCRYPT_KAFKA_PROPERTIES (a client.properties file).")
	fmt.Fprintln(w, "\nExit status: 0 done, or interrupted by SIGINT/SIGTERM once the work in flight was finished;")
	fmt.Fprintln(w, "1 an error of no class below; 2 the command line is wrong; 3 a fault of the environment (Vault")
	fmt.Fprintln(w, "or the broker unreachable, slow or refusing, a key or topic missing, an outage longer than")
	fmt.Fprintln(w, "--max-outage); 4 a fault of a message (the error names it) under --on-message-fault=stop.")
}

// Exit statuses. A script restarts on exitEnvironment once the world is mended; on
// exitMessage a person must look at the message the error names.
const (
	exitOK          = 0 // done, or interrupted after the work in flight was finished
	exitError       = 1 // an error of neither class
	exitUsage       = 2 // the command line is wrong: unknown flag, bad value, missing flag or variable
	exitEnvironment = 3 // a fault of the environment (fault.Environment, explicitly classified)
	exitMessage     = 4 // a fault of a message (fault.Message) that the command was told to stop on
)

// interruptGrace is how long after SIGINT or SIGTERM the process exits at the latest.
// Commands stop receiving at once, finish the batch in flight within drainTimeout and
// close within what remains; past this the process exits without waiting for a broker
// that does not answer: nothing unacknowledged is lost, it is delivered again.
const interruptGrace = 1900 * time.Millisecond

func main() {
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if len(os.Args) < 2 || os.Args[1] == "-h" || os.Args[1] == "--help" || os.Args[1] == "help" {
		usage(os.Stdout)
		if len(os.Args) < 2 {
			os.Exit(exitUsage)
		}
		return
	}
	if os.Args[1] == "--version" || os.Args[1] == "-version" {
		fmt.Println(version())
		return
	}
	var cmd *command
	for i := range commands {
		if commands[i].name == os.Args[1] {
			cmd = &commands[i]
		}
	}
	if cmd == nil {
		fmt.Fprintf(os.Stderr, "pubcrypt: unknown command %q\n\n", os.Args[1])
		usage(os.Stderr)
		os.Exit(exitUsage)
	}
	ctx := interruptible(cmd.name)
	err := cmd.run(ctx, os.Args[2:], os.Stdout)
	code := exitCode(ctx, err)
	switch {
	case code == exitOK && ctx.Err() != nil:
		fmt.Fprintf(os.Stderr, "pubcrypt %s: interrupted; the work in flight was finished or left unacknowledged\n", cmd.name)
	case code != exitOK && !errors.Is(err, flag.ErrHelp) && !alreadyShown(err):
		fmt.Fprintf(os.Stderr, "pubcrypt %s: %s%v%s\n", cmd.name, classLabel(code, err), err, hint(err))
	}
	os.Exit(code)
}

// interruptible returns a context that ends at the first SIGINT or SIGTERM. A second
// signal ends the process at once (the default action is restored), and the process
// exits by itself interruptGrace after the first.
func interruptible(name string) context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sigs
		signal.Reset(os.Interrupt, syscall.SIGTERM)
		cancel()
		time.Sleep(interruptGrace)
		fmt.Fprintf(os.Stderr, "pubcrypt %s: interrupted; stopped without waiting longer for the broker: what was not acknowledged is delivered again\n", name)
		os.Exit(exitOK)
	}()
	return ctx
}

// exitCode maps a command's result to the exit status. An interrupt that only cut work
// short (the error is the cancellation itself) is a clean stop.
func exitCode(ctx context.Context, err error) int {
	var ue *usageError
	var c fault.Classifier
	switch {
	case err == nil || errors.Is(err, flag.ErrHelp):
		return exitOK
	case ctx.Err() != nil && (errors.Is(err, context.Canceled) || gcerrors.Code(err) == gcerrors.Canceled):
		return exitOK
	case errors.As(err, &ue):
		return exitUsage
	case fault.ClassOf(err) == fault.Message:
		return exitMessage
	case errors.As(err, &c):
		return exitEnvironment
	}
	return exitError
}

// classLabel names the class of the fault that ended a command, for the last line an
// operator reads: an environment fault is to be mended and the command run again, a
// message fault needs someone to look at the message.
func classLabel(code int, err error) string {
	var named *classNamed
	switch {
	case errors.As(err, &named):
		return "" // the error says it already
	case code == exitEnvironment:
		return "environment fault: "
	case code == exitMessage:
		return "message fault: "
	}
	return ""
}

// classNamed is an error whose text already names its class.
type classNamed struct{ err error }

func (e *classNamed) Error() string { return e.err.Error() }
func (e *classNamed) Unwrap() error { return e.err }

// usageError is a wrong command line: exit status 2.
type usageError struct {
	err   error
	shown bool // the flag package already printed it with the usage
}

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error {
	return &usageError{err: fmt.Errorf(format, args...)}
}

func alreadyShown(err error) bool {
	var ue *usageError
	return errors.As(err, &ue) && ue.shown
}

// parseFlags parses a command line; its errors are usage errors, which the flag package
// has already printed together with the usage.
func parseFlags(fs *flag.FlagSet, args []string) error {
	rest, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return usagef("unexpected argument %q (flags only; see pubcrypt %s -h)", rest[0], strings.TrimPrefix(fs.Name(), "pubcrypt "))
	}
	return nil
}

// hint adds what to do for errors whose own text does not say it.
func hint(err error) string {
	switch {
	case gcerrors.Code(err) == gcerrors.NotFound && !errors.Is(err, broker.ErrTopicNotFound):
		return " (the topic, subscription or queue does not exist: create it first)"
	case errors.Is(err, context.DeadlineExceeded):
		return " (--broker-timeout and --vault-timeout set how long to wait)"
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
