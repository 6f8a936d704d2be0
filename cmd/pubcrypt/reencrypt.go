package main

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net/url"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"gocloud.dev/pubsub"

	"github.com/pubcrypt/pubcrypt/crypttopic"
	"github.com/pubcrypt/pubcrypt/fault"
	"github.com/pubcrypt/pubcrypt/internal/broker"
	"github.com/pubcrypt/pubcrypt/internal/codec"
	"github.com/pubcrypt/pubcrypt/keyring"
	"github.com/pubcrypt/pubcrypt/reencrypt"
)

func runReencrypt(ctx context.Context, args []string, out io.Writer) error {
	fs := newFlags("reencrypt", "Re-protects every message of a retained encrypted topic onto another topic, under the\n"+
		"latest versions of the keys, so that the old versions can then be retired (Vault\n"+
		"Transit's min_decryption_version). Each message is decrypted and sent again the way\n"+
		"it was protected: whole-body messages whole-body under a fresh data key, field-level\n"+
		"messages under the field policy their manifest records, with the field keys named by\n"+
		"--vault-det-key and --vault-fpe-key. Delivery is at least once, as for encrypt; the\n"+
		"command stops when no message arrived for --idle (the end of the topic) and then\n"+
		"compares the count with the records the source topic holds (Kafka).\n\n"+
		"Progress goes to stderr: a counter on a terminal, a line per 1000 messages otherwise\n"+
		"(and pubcrypt_bridge_forwarded_total with --listen).\n\n"+
		"Example: pubcrypt reencrypt --sub 'kgo://pubcrypt-reencrypt?topic=purchases_encrypted&offset=oldest' \\\n"+
		"           --topic kgo://purchases_encrypted_v3\n"+
		"         vault write transit/keys/pubcrypt/config min_decryption_version=3")
	subURL := fs.String("sub", "", "subscription URL of the retained encrypted topic (required; offset=oldest to read it all)")
	topicURL := fs.String("topic", "", "topic URL of the re-encrypted copy (required)")
	batch := fs.Int("batch", 100, "messages decrypted and sent together")
	sensitive := fs.String("sensitive-metadata", "", "comma-separated metadata keys that travel inside the ciphertext (as the producers' SensitiveMetadata); a message with another such entry is a message fault")
	var vf vaultFlags
	vf.register(fs)
	var bf brokerFlags
	bf.register(fs)
	var ff faultFlags
	ff.register(fs, "a message that can never be decrypted (tampered with, a key version already retired)", onFaultStop)
	var sf stopFlags
	sf.register(fs, 0, defaultReencryptIdle)
	var of obsFlags
	of.register(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	obs, err := of.start("reencrypt")
	if err != nil {
		return err
	}
	defer obs.close()
	if err := requireFlag(fs, "sub", *subURL); err != nil {
		return err
	}
	if err := requireFlag(fs, "topic", *topicURL); err != nil {
		return err
	}
	if *batch < 1 {
		return usagef("--batch must be at least 1")
	}
	if sf.idle <= 0 {
		return usagef("--idle must be positive: it is how reencrypt knows it has read the topic to its end")
	}
	onFault, err := ff.policy()
	if err != nil {
		return err
	}
	bopts, err := bf.options()
	if err != nil {
		return err
	}
	var sens []string
	for _, k := range strings.Split(*sensitive, ",") {
		if k = strings.TrimSpace(k); k != "" {
			sens = append(sens, k)
		}
	}
	kr, err := vf.keyring()
	if err != nil {
		return err
	}
	defer closeKeyring(kr)
	if err := checkKeys(ctx, kr, vf.keysFor(nil)); err != nil {
		return err
	}
	opener, err := codec.NewOpener(codec.OpenOptions{Keyring: kr})
	if err != nil {
		return err
	}
	check := startCountCheck(ctx, *subURL, bopts)
	r := &reencryptor{opener: opener, kr: kr, vf: &vf, sensitive: sens, checked: map[string]bool{}, versions: map[int]int{}, pending: map[*pubsub.Message]int{}}
	prog := newProgress(os.Stderr)
	b := &bridger{
		subURL: *subURL, topicURL: *topicURL, broker: bopts, kr: kr, vaultTimeout: vf.timeout,
		topicOpts: crypttopic.Options{Keyring: kr, SensitiveMetadata: sens, FieldKeys: crypttopic.FieldKeys{Deterministic: vf.detKey, FPE: vf.fpeKey}},
		batch:     *batch, stop: sf, onFault: onFault, dlURL: ff.deadLetter,
		outage:  outage{max: ff.maxOutage, health: obs.health},
		prepare: r.prepare,
		each:    func(m *pubsub.Message) { countForwarded(); r.forwarded(m); prog.add() },
		faulty: func(verb string, m *pubsub.Message, err error) {
			delete(r.pending, m)
			countBridgeFault(verb)
			fmt.Fprintf(out, "%s %s: %v\n", verb, broker.Position(m), err)
		},
	}
	if err := b.start(ctx); err != nil {
		b.close()
		return err
	}
	obs.started()
	st, err := b.run(ctx)
	b.close()
	prog.done()
	fmt.Fprintf(out, "%d message(s) re-encrypted from %s to %s", st.forwarded, redactURL(*subURL), redactURL(*topicURL))
	if len(r.versions) > 0 {
		fmt.Fprintf(out, " (were under key version %s)", r.versionList())
	}
	if st.deadLettered > 0 || onFault == onFaultDeadLetter {
		fmt.Fprintf(out, ", %d dead-lettered to %s", st.deadLettered, redactURL(ff.deadLetter))
	}
	if st.skipped > 0 || onFault == onFaultSkip {
		fmt.Fprintf(out, ", %d skipped", st.skipped)
	}
	fmt.Fprintln(out)
	if err != nil || ctx.Err() != nil || sf.max > 0 {
		return err
	}
	return check.finish(ctx, out)
}

// defaultReencryptIdle is how long reencrypt waits for a next message before it takes the
// topic as read to its end.
const defaultReencryptIdle = 10 * time.Second

// countCheck compares, for a Kafka source, what the consumer group has committed at the
// end with the records the topic held when reencrypt started: every one of them must have
// been handled (re-encrypted, dead-lettered or skipped) before old key versions go.
type countCheck struct {
	settings     broker.KafkaSettings
	group, topic string
	ends         map[int32]int64 // nil: no check (another broker, or no answer)
	timeout      time.Duration
}

func startCountCheck(ctx context.Context, subURL string, bopts broker.Options) *countCheck {
	c := &countCheck{timeout: orDefault(bopts.Timeout, broker.DefaultTimeout)}
	u, err := url.Parse(subURL)
	if err != nil || !broker.IsKafka(u.Scheme) || u.Query().Get("topic") == "" {
		return c
	}
	if c.settings, err = broker.KafkaSettingsFromEnv(); err != nil {
		return c
	}
	c.group, c.topic = u.Host, u.Query().Get("topic")
	cctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	c.ends, _ = broker.KafkaEndOffsets(cctx, c.settings, c.topic)
	return c
}

func (c *countCheck) finish(ctx context.Context, out io.Writer) error {
	if c.ends == nil {
		fmt.Fprintln(out, "count check: not available for this broker; compare the counts above with the source's")
		return nil
	}
	var held int64
	for _, end := range c.ends {
		held += end
	}
	cctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	unread, err := broker.KafkaUnread(cctx, c.settings, c.group, c.topic, c.ends)
	if err != nil {
		return fmt.Errorf("count check: %w", err)
	}
	if unread > 0 {
		return fault.Mark(fmt.Errorf("count check: group %s has not handled %d of the records %s held at the start; run again (it resumes where it stopped) before retiring key versions", c.group, unread, c.topic), fault.Environment)
	}
	fmt.Fprintf(out, "count check: group %s has handled every record %s held at the start (offsets up to %d in all)\n", c.group, c.topic, held)
	return nil
}

// reencryptor is the bridger's prepare step of reencrypt: it decrypts copies of the source
// messages together and readies each to be sent again (reencrypt.Message).
type reencryptor struct {
	opener    *codec.Opener
	kr        keyring.Keyring
	vf        *vaultFlags
	sensitive []string
	checked   map[string]bool         // field keys checked (keyring.CheckKey) on first use
	versions  map[int]int             // messages forwarded, by the version of the key that had wrapped their data key
	pending   map[*pubsub.Message]int // source message → that version, until it is forwarded
}

// forwarded counts the source message m, sent again and acknowledged, by its old version.
func (r *reencryptor) forwarded(m *pubsub.Message) {
	if v, ok := r.pending[m]; ok {
		r.versions[v]++
		delete(r.pending, m)
	}
}

func (r *reencryptor) prepare(ctx context.Context, src, msgs []*pubsub.Message) ([]error, error) {
	for _, m := range msgs {
		m.Metadata = maps.Clone(m.Metadata) // the source message stays as received
	}
	infos, errs := r.opener.OpenBatch(ctx, msgs)
	faults := make([]error, len(msgs))
	for i, m := range msgs {
		if errs[i] != nil {
			if fault.ClassOf(errs[i]) != fault.Message {
				return nil, errs[i]
			}
			faults[i] = errs[i]
			continue
		}
		if err := r.checkFieldKeys(ctx, infos[i]); err != nil {
			return nil, err
		}
		again, err := reencrypt.Message(m, infos[i], r.sensitive)
		if err != nil {
			faults[i] = err
			continue
		}
		*m = pubsub.Message{Body: again.Body, Metadata: again.Metadata}
		r.pending[src[i]] = infos[i].KeyVersion // counted once forwarded: a batch may be tried again
	}
	return faults, nil
}

// checkFieldKeys checks, the first time a message needs it, the field key its policy uses:
// a misspelt --vault-det-key must stop the command, not create a key.
func (r *reencryptor) checkFieldKeys(ctx context.Context, info codec.Info) error {
	p, err := info.FieldPolicy()
	if err != nil || p == nil {
		return nil
	}
	for _, k := range r.vf.keysFor(p) {
		if r.checked[k.flag] {
			continue
		}
		if err := checkKeys(ctx, r.kr, []keyCheck{k}); err != nil {
			return &fatalError{err}
		}
		r.checked[k.flag] = true
	}
	return nil
}

func (r *reencryptor) versionList() string {
	var vs []int
	for v := range r.versions {
		vs = append(vs, v)
	}
	sort.Ints(vs)
	var parts []string
	for _, v := range vs {
		parts = append(parts, fmt.Sprintf("v%d: %d", v, r.versions[v]))
	}
	return strings.Join(parts, ", ")
}

// progress shows a count on stderr: rewritten in place on a terminal, a line per 1000
// otherwise.
type progress struct {
	mu   sync.Mutex
	w    *os.File
	tty  bool
	n    int
	seen bool
}

func newProgress(w *os.File) *progress {
	fi, err := w.Stat()
	return &progress{w: w, tty: err == nil && fi.Mode()&os.ModeCharDevice != 0}
}

func (p *progress) add() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.n++
	p.seen = true
	switch {
	case p.tty:
		fmt.Fprintf(p.w, "\rre-encrypted %d", p.n)
	case p.n%1000 == 0:
		fmt.Fprintf(p.w, "re-encrypted %d\n", p.n)
	}
}

func (p *progress) done() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.tty && p.seen {
		fmt.Fprintln(p.w)
	}
}
