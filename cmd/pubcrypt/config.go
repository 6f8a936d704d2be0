package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"gocloud.dev/pubsub"

	"github.com/pubcrypt/pubcrypt/crypttopic"
	"github.com/pubcrypt/pubcrypt/fault"
	"github.com/pubcrypt/pubcrypt/internal/broker"
	"github.com/pubcrypt/pubcrypt/internal/wire"
	"github.com/pubcrypt/pubcrypt/keyring"
)

// vaultFlags select the keys: Vault's transit keys, whose server and token come from
// Vault's own environment variables, or a key-encryption key by URL (--kek).
type vaultFlags struct {
	mount, key, detKey, fpeKey, kek, kekID string
	fpeMount                               string
	timeout                                time.Duration
	auth                                   map[string]*string // keyring.VaultAuthSettings by name
}

func (v *vaultFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&v.mount, "vault-mount", "transit", "path of Vault's transit secrets engine")
	fs.StringVar(&v.key, "vault-key", keyring.DefaultKey, "transit key that wraps data keys and encrypts transit fields")
	fs.StringVar(&v.detKey, "vault-det-key", keyring.DefaultDeterministicKey, "derived convergent transit key for deterministic fields")
	fs.StringVar(&v.fpeKey, "vault-fpe-key", keyring.DefaultFPEKey, "transit key from which format-preserving-encryption keys are derived (fields fpe(...,vault): the key inside the FPE plugin)")
	fs.StringVar(&v.fpeMount, "vault-fpe-mount", keyring.DefaultFPEMount, "path of pubcrypt's Vault FPE plugin, for fields fpe(...,vault)")
	fs.DurationVar(&v.timeout, "vault-timeout", 10*time.Second, "longest wait for one answer from Vault (or from the --kek key service)")
	fs.StringVar(&v.kekID, "kek-id", "", "name of the --kek key in envelopes, the same on every side (default: derived from the URL's scheme, host and path, so an alias and an ARN of one AWS key differ)")
	v.auth = map[string]*string{}
	for _, s := range keyring.VaultAuthSettings {
		v.auth[s.Name] = fs.String("vault-"+strings.ReplaceAll(s.Name, "_", "-"), "", s.Usage)
	}
	fs.StringVar(&v.kek, "kek", "", "wrap data keys with this key-encryption key instead of Vault Transit: awskms:///KEY-ID?region=R, gcpkms://projects/P/locations/L/keyRings/R/cryptoKeys/K, azurekeyvault://NAME.vault.azure.net/keys/KEY, hashivault://KEY, base64key://KEY (credentials from the cloud's own variables; the field modes transit, deterministic and fpe still need Vault)")
}

// keyring returns the keyring that wraps data keys: the --kek keeper if one is given,
// else Vault Transit.
func (v *vaultFlags) keyring() (keyring.Keyring, error) {
	if v.kek == "" {
		if v.kekID != "" {
			return nil, usagef("--kek-id needs --kek")
		}
		return v.vault()
	}
	if v.timeout <= 0 {
		return nil, usagef("--vault-timeout must be positive")
	}
	ctx, cancel := context.WithTimeout(context.Background(), v.timeout)
	defer cancel()
	k, err := keyring.OpenKeeper(ctx, v.kek, keyring.KeeperOptions{KeyID: v.kekID, Timeout: v.timeout})
	if err != nil {
		return nil, fmt.Errorf("--kek: %w", err)
	}
	return k, nil
}

// vault returns the Vault keyring, refusing early when Vault's variables are missing so
// that the user gets one line to fix rather than a connection error later.
func (v *vaultFlags) vault() (*keyring.Vault, error) {
	if os.Getenv("VAULT_ADDR") == "" {
		return nil, usagef("VAULT_ADDR is not set: export VAULT_ADDR=https://vault.example:8200 (and VAULT_TOKEN)")
	}
	auth, err := keyring.VaultAuthFrom(func(name string) string {
		if p := v.auth[name]; p != nil {
			return *p
		}
		return ""
	})
	if err != nil {
		return nil, usagef("--vault-%s", strings.TrimPrefix(err.Error(), "keyring: "))
	}
	if (auth.Method == "" || auth.Method == "token") && auth.TokenFile == "" && os.Getenv("VAULT_TOKEN") == "" {
		return nil, usagef("VAULT_TOKEN is not set: export a Vault token allowed to use the transit keys, or give --vault-token-file, or log in with --vault-auth approle|jwt|kubernetes|cert")
	}
	if v.timeout <= 0 {
		return nil, usagef("--vault-timeout must be positive")
	}
	kr, err := keyring.NewVault(keyring.VaultOptions{Mount: v.mount, Key: v.key, Timeout: v.timeout, Auth: auth, FPEMount: v.fpeMount})
	var oe *keyring.OptionError
	if errors.As(err, &oe) {
		if name, ok := strings.CutPrefix(oe.Option, "VaultOptions.Auth."); ok {
			return nil, usagef("--vault-auth %s: %s %s", auth.Method, authFlag(name), oe.Reason)
		}
	}
	return kr, err
}

// authFlag is the flag of a VaultAuth field named in an OptionError.
func authFlag(field string) string {
	switch field {
	case "Method":
		return "--vault-auth"
	case "Mount":
		return "--vault-auth-mount"
	case "TokenFile":
		return "--vault-token-file"
	case "RoleID":
		return "--vault-role-id-file"
	case "RoleIDFile":
		return "--vault-role-id-file"
	case "SecretID", "SecretIDFile":
		return "--vault-secret-id-file"
	case "Role":
		return "--vault-role"
	case "JWTFile":
		return "--vault-jwt-file"
	}
	return field
}

// closeKeyring ends a keyring's background work when a command ends: a Vault token's
// renewals and idle connections, a keeper opened by URL.
func closeKeyring(kr keyring.Keyring) {
	if c, ok := kr.(io.Closer); ok {
		_ = c.Close()
	}
}

// brokerFlags bound the waits on the broker.
type brokerFlags struct {
	timeout time.Duration
}

func (b *brokerFlags) register(fs *flag.FlagSet) {
	fs.DurationVar(&b.timeout, "broker-timeout", broker.DefaultTimeout, "longest wait for the broker: to open and check a topic at start, for one request, for one send (Kafka subscriptions need more than 10s)")
}

func (b *brokerFlags) options() (broker.Options, error) {
	if b.timeout <= 0 {
		return broker.Options{}, usagef("--broker-timeout must be positive")
	}
	return broker.Options{Timeout: b.timeout}, nil
}

// stopFlags bound how long a reading command runs.
type stopFlags struct {
	max  int
	idle time.Duration
}

func (s *stopFlags) register(fs *flag.FlagSet, defMax int, defIdle time.Duration) {
	countFlag(fs, &s.max, "max", defMax, "stop after this many messages (0: no limit)")
	durationFlag(fs, &s.idle, "idle", defIdle, "stop when no message arrives for this long (0: wait forever)")
}

// errIdle ends a reading loop that waited --idle for a message.
var errIdle = errors.New("idle")

// receive waits for the next message, up to s.idle.
func (s *stopFlags) receive(ctx context.Context, recv func(context.Context) (*pubsub.Message, error)) (*pubsub.Message, error) {
	if s.idle <= 0 {
		return recv(ctx)
	}
	rctx, cancel := context.WithTimeout(ctx, s.idle)
	defer cancel()
	m, err := recv(rctx)
	if err != nil && ctx.Err() == nil && rctx.Err() != nil {
		return nil, errIdle
	}
	return m, err
}

func (s *stopFlags) done(n int) bool { return s.max > 0 && n >= s.max }

func requireFlag(fs *flag.FlagSet, name, value string) error {
	if value == "" {
		return usagef("--%s is required (see pubcrypt %s -h)", name, fs.Name()[len("pubcrypt "):])
	}
	return nil
}

// shutdownTimeout bounds how long a command waits, when it ends, for sends still being
// retried: a broker that cannot be reached must not keep the command alive past its end.
const shutdownTimeout = 10 * time.Second

// shutdown flushes and closes a topic or subscription within shutdownTimeout. gocloud's
// Shutdown waits for the driver to close whatever its context says (kafkapubsub leaves
// its consumer group over the network), so a shutdown that has not returned by then is
// abandoned: the process is about to end, and what it did not acknowledge is delivered
// again.
func shutdown(s interface{ Shutdown(context.Context) error }) error {
	ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- s.Shutdown(ctx) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return fault.Mark(fmt.Errorf("shutdown did not finish within %v: %w", shutdownTimeout, ctx.Err()), fault.Environment)
	}
}

// shutdownAll shuts down each of ss concurrently, so that the whole takes at most
// shutdownTimeout.
func shutdownAll(ss ...interface{ Shutdown(context.Context) error }) {
	var wg sync.WaitGroup
	for _, s := range ss {
		wg.Go(func() { _ = shutdown(s) })
	}
	wg.Wait()
}

// drainTimeout is how long work already begun (a batch being sent) may go on after an
// interrupt, so that it is finished and acknowledged rather than cut in half.
const drainTimeout = time.Second

// drainContext returns a context for work begun under ctx: it ends drainTimeout after ctx
// does, or when release is called.
func drainContext(ctx context.Context) (wctx context.Context, release context.CancelFunc) {
	wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stop := context.AfterFunc(ctx, func() {
		t := time.NewTimer(drainTimeout)
		defer t.Stop()
		select {
		case <-t.C:
			cancel()
		case <-wctx.Done():
		}
	})
	return wctx, func() { stop(); cancel() }
}

// interrupted reports whether err only says that ctx, the command's own context, ended.
func interrupted(ctx context.Context, err error) bool {
	return ctx.Err() != nil && (err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded))
}

// Backoff between attempts while an outage lasts: 200 ms doubling to 30 s, with jitter so
// that many bridges restarted by one outage do not knock in step.
const (
	backoffFirst = 200 * time.Millisecond
	backoffMax   = 30 * time.Second
)

// outage rides out faults of the environment in a long-running command: it waits with
// bounded exponential backoff between attempts, logs an outage once when it begins (with
// its class) and once when it ends, and gives up when the outage has lasted longer than
// max (0: never).
type outage struct {
	log   *slog.Logger
	max   time.Duration
	since time.Time // zero: no outage now
	delay time.Duration
	what  string
	tries int

	health *health // told when an outage begins and ends (/readyz, observe.go); nil: nobody
}

// wait records that what failed with err and sleeps before the next attempt. It returns
// ctx's error when ctx ends, and an environment fault when the outage has outlasted max.
func (o *outage) wait(ctx context.Context, what string, err error) error {
	var fe *fatalError
	if errors.Is(err, keyring.ErrTokenInvalid) || errors.As(err, &fe) {
		// A static token Vault no longer accepts, a key that is missing or unfit: no
		// retry passes until someone mends it, so stop and say so (nothing was
		// acknowledged).
		return fault.Mark(fmt.Errorf("%s: %w", what, err), fault.Environment)
	}
	now := time.Now()
	if o.since.IsZero() {
		o.since, o.delay, o.what, o.tries = now, backoffFirst, what, 0
		o.health.failing(err)
		o.logger().Warn("outage: holding the messages, retrying until it ends", "at", what, "class", fault.ClassOf(err), "err", err.Error())
	} else {
		o.delay = min(2*o.delay, backoffMax)
	}
	o.tries++
	if o.max > 0 && now.Sub(o.since) >= o.max {
		return fault.Mark(fmt.Errorf("%s: outage of %v, longer than --max-outage %v (%d attempts): %w",
			what, now.Sub(o.since).Round(time.Millisecond), o.max, o.tries, err), fault.Environment)
	}
	d := o.delay/2 + rand.N(o.delay/2+1)
	if o.max > 0 {
		d = min(d, o.since.Add(o.max).Sub(now)+time.Millisecond)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// bound returns ctx bounded by timeout and, while an outage with a --max-outage lasts,
// by the moment it will have lasted that long: an attempt that cannot succeed before
// then (a broker or Vault that does not answer) must not carry the command past it.
func (o *outage) bound(ctx context.Context, timeout time.Duration) (context.Context, context.CancelFunc) {
	deadline := time.Now().Add(timeout)
	if o.max > 0 && !o.since.IsZero() {
		if end := o.since.Add(o.max); end.Before(deadline) {
			deadline = end
		}
	}
	return context.WithDeadline(ctx, deadline)
}

// slog's text handler prints an error value with %+v, which for gocloud's errors adds
// stack frames over several lines; logs get the error's one-line text instead (.Error()).

// over records that work went through: an outage in progress has ended.
func (o *outage) over() {
	if o.since.IsZero() {
		return
	}
	o.logger().Warn("outage over: going on", "at", o.what, "lasted", time.Since(o.since).Round(time.Millisecond), "attempts", o.tries)
	o.health.ok()
	o.since = time.Time{}
}

func (o *outage) logger() *slog.Logger {
	if o.log == nil {
		return slog.Default()
	}
	return o.log
}

// What a long-running command does with a fault of a message (a message that can never
// pass: not JSON where a field policy needs JSON, tampered with, no envelope, ...).
const (
	onFaultDeadLetter = "dead-letter" // send it, encrypted whole-body, to --dead-letter, then acknowledge it
	onFaultSkip       = "skip"        // acknowledge it, count it, go on
	onFaultStop       = "stop"        // stop with an error naming it, without acknowledging it
)

// faultFlags choose what a long-running command does with a fault of a message and how
// long it rides out a fault of the environment.
type faultFlags struct {
	onMessage  string
	deadLetter string
	maxOutage  time.Duration
	def        string // the policy without --on-message-fault and --dead-letter
}

// register adds the flags; def is the policy when neither --on-message-fault nor
// --dead-letter is given (stop for encrypt and consume).
func (f *faultFlags) register(fs *flag.FlagSet, what, def string) {
	f.def = def
	fs.StringVar(&f.onMessage, "on-message-fault", "", "what to do with "+what+": dead-letter (to --dead-letter, encrypted whole-body, then acknowledged), skip (acknowledged and counted) or stop (exit 4 naming it, not acknowledged); default dead-letter with --dead-letter, else "+def)
	fs.StringVar(&f.deadLetter, "dead-letter", "", "topic URL for messages with a fault of their own (must exist)")
	durationFlag(fs, &f.maxOutage, "max-outage", 0, "exit (status 3) when Vault or the broker has been failing for this long (0: ride out any outage)")
}

// policy validates the flags and returns the message-fault policy.
func (f *faultFlags) policy() (string, error) {
	if f.maxOutage < 0 {
		return "", usagef("--max-outage must be 0 or positive")
	}
	p := f.onMessage
	if p == "" {
		p = f.def
		if f.deadLetter != "" {
			p = onFaultDeadLetter
		}
	}
	switch p {
	case onFaultDeadLetter:
		if f.deadLetter == "" {
			return "", usagef("--on-message-fault=dead-letter needs --dead-letter URL")
		}
	case onFaultSkip, onFaultStop:
		if f.deadLetter != "" {
			return "", usagef("--dead-letter is only used with --on-message-fault=dead-letter, not %s", p)
		}
	default:
		return "", usagef("--on-message-fault must be dead-letter, skip or stop, not %q", p)
	}
	return p, nil
}

// fatalError is a fault of the environment that no retry mends (a key missing or unfit
// for its use): outage.wait stops at once instead of riding it out.
type fatalError struct{ err error }

func (e *fatalError) Error() string { return e.err.Error() }
func (e *fatalError) Unwrap() error { return e.err }

// subscriptionError is a failure of a subscription itself, not of a message: a gocloud
// subscription whose Receive failed stays failed, so it must be reopened.
type subscriptionError struct{ err error }

func (e *subscriptionError) Error() string           { return "receive: " + e.err.Error() }
func (e *subscriptionError) Unwrap() error           { return e.err }
func (e *subscriptionError) FaultClass() fault.Class { return fault.Environment }

// outageOfServices reports whether err is an outage of Vault or of the broker, the
// outages a long-running command rides out (rather than, say, a full disk).
func outageOfServices(err error) bool {
	var se *subscriptionError
	if errors.Is(err, keyring.ErrTokenInvalid) {
		return false // no retry passes until someone gives a new token: stop and say so
	}
	return fault.ClassOf(err) == fault.Environment && (keyService(err) || errors.As(err, &se) || errors.Is(err, broker.ErrTopicNotFound) ||
		errors.Is(err, context.DeadlineExceeded))
}

// Dead letters (README "Dead letters"). The body is the message's body exactly as the
// command received it, encrypted whole-body (no field policy), so a dead-letter topic
// never holds plaintext; the receiving side decrypts it with cryptsub like any other
// message. Clear metadata says why and where from. The message's own metadata rides
// along unchanged, except that keys crypttopic reserves ("pubcrypt...", the envelope
// of a message that was already encrypted) and keys that look like ours ("dead-letter-...")
// are carried under deadLetterRawPrefix + key; rawMetadata undoes that.
const (
	deadLetterPrefix    = "dead-letter-"
	deadLetterRawPrefix = "dead-letter-raw-"
	deadLetterReason    = "dead-letter-reason" // the error, never the content
	deadLetterClass     = "dead-letter-class"  // "message"
	deadLetterSource    = "dead-letter-source" // broker position or message ID
	deadLetterSub       = "dead-letter-sub"    // the subscription URL it was received on
	deadLetterBy        = "dead-letter-by"     // "pubcrypt encrypt", "pubcrypt consume"
	deadLetterTime      = "dead-letter-time"   // RFC 3339, UTC
	maxReasonBytes      = 1000                 // inside Pub/Sub's 1024-byte attribute values
	deadLetterReasonCut = "…"
)

// deadLetterMetadata returns the metadata of m's dead letter.
func deadLetterMetadata(md map[string]string, reason error, source, sub, by string, now time.Time) map[string]string {
	out := make(map[string]string, len(md)+6)
	for k, v := range md {
		if wire.Reserved(k) || hasPrefix(k, deadLetterPrefix) { // crypttopic's reserved keys: an envelope
			k = deadLetterRawPrefix + k
		}
		out[k] = v
	}
	why := toValidUTF8(reason.Error())
	if len(why) > maxReasonBytes {
		cut := maxReasonBytes - len(deadLetterReasonCut)
		for cut > 0 && !utf8.RuneStart(why[cut]) {
			cut--
		}
		why = why[:cut] + deadLetterReasonCut
	}
	out[deadLetterReason] = why
	out[deadLetterClass] = fault.ClassOf(reason).String()
	out[deadLetterSource] = toValidUTF8(source)
	out[deadLetterSub] = sub
	out[deadLetterBy] = by
	out[deadLetterTime] = now.UTC().Format(time.RFC3339Nano)
	return out
}

// rawMetadata returns the metadata of the message a dead letter was made of, from the
// dead letter's metadata as received (decrypted).
func rawMetadata(md map[string]string) map[string]string {
	out := make(map[string]string, len(md))
	for k, v := range md {
		switch {
		case hasPrefix(k, deadLetterRawPrefix):
			out[k[len(deadLetterRawPrefix):]] = v
		case !hasPrefix(k, deadLetterPrefix):
			out[k] = v
		}
	}
	return out
}

func hasPrefix(s, p string) bool { return strings.HasPrefix(s, p) }

func toValidUTF8(s string) string { return strings.ToValidUTF8(s, "\uFFFD") }

// deadLetter sends messages with a fault of their own to the dead-letter topic.
type deadLetter struct {
	url   string // redacted of any userinfo
	sub   string // the subscription the messages came from
	by    string // "pubcrypt encrypt"
	topic *crypttopic.Topic
}

// openDeadLetter opens the dead-letter topic for whole-body encryption and checks, now,
// that it exists and that a data key can be had: a dead-letter topic that is missing is
// an error at start, not a stall at the first bad message.
func openDeadLetter(ctx context.Context, rawURL string, kr keyring.Keyring, bopts broker.Options, sub, by string) (*deadLetter, error) {
	t, err := openCryptTopic(ctx, rawURL, crypttopic.Options{Keyring: kr}, bopts)
	if err != nil {
		return nil, fmt.Errorf("--dead-letter: %w", err)
	}
	return newDeadLetter(ctx, t, rawURL, sub, by)
}

// newDeadLetter checks that t, opened for rawURL, gets a data key, and dead-letters to it.
func newDeadLetter(ctx context.Context, t *crypttopic.Topic, rawURL, sub, by string) (*deadLetter, error) {
	if err := t.Check(ctx); err != nil {
		go shutdown(t)
		return nil, fmt.Errorf("--dead-letter: %w", err)
	}
	return &deadLetter{url: redactURL(rawURL), sub: redactURL(sub), by: by, topic: t}, nil
}

// send dead-letters m, which failed with reason.
func (d *deadLetter) send(ctx context.Context, m *pubsub.Message, reason error) error {
	dm := &pubsub.Message{Body: m.Body, Metadata: deadLetterMetadata(m.Metadata, reason, broker.Position(m), d.sub, d.by, time.Now())}
	if err := d.topic.Send(ctx, dm); err != nil {
		return fmt.Errorf("dead-letter message %s to %s: %w", broker.Position(m), d.url, err)
	}
	return nil
}

// cryptTopicURL returns the URL to open for the driver and the crypttopic options of
// rawURL: a record key named by key_name is protected unless the URL says
// record_key=clear, and Broker is the URL's scheme, unless opts say otherwise.
func cryptTopicURL(rawURL string, opts crypttopic.Options) (string, crypttopic.Options, error) {
	driverURL, rk, err := crypttopic.RecordKeyFromURL(rawURL)
	if err != nil {
		return "", opts, &usageError{err: err}
	}
	if opts.RecordKey.Entry == "" {
		opts.RecordKey.Entry = rk.Entry
	}
	if opts.RecordKey.Field == "" {
		opts.RecordKey.Field = rk.Field
	}
	if opts.RecordKey.Mode == "" {
		opts.RecordKey.Mode = rk.Mode
	}
	if opts.Broker == "" {
		if u, err := url.Parse(rawURL); err == nil {
			opts.Broker = u.Scheme
		}
	}
	return driverURL, opts, nil
}

// openCryptTopic opens url for crypttopic with bounded waits on the broker.
func openCryptTopic(ctx context.Context, rawURL string, opts crypttopic.Options, bopts broker.Options) (*crypttopic.Topic, error) {
	return openCryptTopicWith(ctx, rawURL, opts, func(ctx context.Context, driverURL string) (*pubsub.Topic, error) {
		return broker.OpenTopicWith(ctx, driverURL, bopts)
	})
}

// openCryptTopicWith is openCryptTopic with open opening the driver's topic at the URL
// cryptTopicURL leaves for it.
func openCryptTopicWith(ctx context.Context, rawURL string, opts crypttopic.Options, open func(ctx context.Context, driverURL string) (*pubsub.Topic, error)) (*crypttopic.Topic, error) {
	driverURL, opts, err := cryptTopicURL(rawURL, opts)
	if err != nil {
		return nil, err
	}
	t, err := open(ctx, driverURL)
	if err != nil {
		return nil, err
	}
	ct, err := crypttopic.New(t, opts)
	if err != nil {
		go shutdown(t)
		return nil, &usageError{err: err}
	}
	return ct, nil
}

// redactURL drops userinfo from a URL before it is printed or sent.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		return raw
	}
	u.User = nil
	return u.String()
}
