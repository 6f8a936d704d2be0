// Package encurl makes encryption a URL change. Imported for its side effect,
//
//	import _ "github.com/pubcrypt/pubcrypt/encurl"
//
// it registers on gocloud's default URL mux the schemes "enc+" + an inner scheme (enc+kafka,
// enc+mem, enc+gcppubsub, ... see Schemes), so that an application written against plain
// gocloud encrypts and decrypts without a code change:
//
//	top, err := pubsub.OpenTopic(ctx, "enc+kafka://purchases_encrypted")
//	sub, err := pubsub.OpenSubscription(ctx, "enc+kafka://billing?topic=purchases_encrypted&offset=oldest")
//
// The values returned are plain *pubsub.Topic and *pubsub.Subscription. Underneath, a
// gocloud driver opens the inner URL (the same URL without "enc+" and without the
// parameters below; kafka:// gets pubcrypt's Kafka opener, with TLS/SASL from the
// environment) and wraps it in a crypttopic.Topic or cryptsub.Subscription. The inner
// driver must be linked into the program as usual: kafka is; mem:// needs
// gocloud.dev/pubsub/mempubsub, and so on; pubcrypt's CLI links every driver gocloud ships.
//
// Two ways to the same thing:
//
//	| wrapper types                                | URL                                                |
//	|----------------------------------------------|----------------------------------------------------|
//	| crypttopic.Open(ctx, "kafka://t", opts)      | pubsub.OpenTopic(ctx, "enc+kafka://t")             |
//	| cryptsub.Open(ctx, "kafka://g?topic=t", opts) | pubsub.OpenSubscription(ctx, "enc+kafka://g?topic=t") |
//	| keyring.VaultOptions{Key, Mount}             | vault_key=, vault_mount= (address, token from env) |
//	| keyring.VaultOptions.Auth                    | vault_auth=approle&vault_role_id_file=...          |
//	| keyring.OpenKeeper(ctx, kekURL, opts)        | kek=<URL-escaped keeper URL>                       |
//	| crypttopic.Options.Fields                    | fields=<URL-escaped policy>                        |
//	| crypttopic.Options.Reuse.MaxAge              | reuse_max_age=<duration>                           |
//	| any keyring, any Options                     | config=<name given to RegisterConfig>              |
//	| Receive returns *cryptsub.DecryptError       | never: message faults dead-lettered (dlq=<URL>) or acked + logged; environment faults nacked or held |
//	| *crypttopic.Topic / *cryptsub.Subscription   | plain *pubsub.Topic / *pubsub.Subscription         |
//
// URL parameters, removed before the inner URL is opened (all others pass through):
//
//	vault_key      transit key that wraps data keys; default "pubcrypt"
//	vault_mount    transit mount path; default "transit"
//	vault_auth     how the keyring gets its Vault token (keyring.VaultAuth): token (default:
//	               VAULT_TOKEN, or vault_token_file re-read on change), approle
//	               (vault_role_id_file or VAULT_ROLE_ID, vault_secret_id_file or
//	               VAULT_SECRET_ID, vault_secret_id_wrapped=true), jwt (vault_role,
//	               vault_jwt_file), kubernetes (vault_role, vault_jwt_file), cert
//	               (vault_role); vault_auth_mount if not mounted at the method's name.
//	               Tokens are renewed and logins repeated before they expire.
//	fields         topics: field policy (crypttopic.ParseFieldPolicy), URL-escaped:
//	               fields=name%3Dtransit%2Ccard_number%3Dfpe(bin%2Cluhn)
//	reuse_max_age  topics: replace a data key after this long (Go duration, e.g. 1m)
//	dlq            subscriptions: dead-letter topic URL, URL-escaped: dlq=kafka%3A%2F%2Fbad
//	config         name given to RegisterConfig: keyring and Options for advanced use
//	kek            key-encryption key by URL instead of Vault Transit (keyring.OpenKeeper),
//	               URL-escaped: kek=awskms%3A%2F%2F%2FKEY-ID%3Fregion%3Deu-west-1; the
//	               field modes transit, deterministic and fpe need Vault, envelope does not
//	kek_id         name of the kek in envelopes, the same on both sides; default derived
//	               from the kek URL's scheme, host and path (keyring.DefaultKeeperKeyID)
//
// On enc+kgo and enc+kafka topics, key_name=ENTRY names the record key, which is then
// protected (deterministic encryption, docs/FORMAT.md section 3.2) unless record_key=clear
// says otherwise, and key_field=PATH takes it from the plaintext body: see
// crypttopic.RecordKeyFromURL. Subscriptions take key_name alone.
//
// Vault's address and token come from Vault's environment variables (VAULT_ADDR,
// VAULT_TOKEN, VAULT_NAMESPACE, VAULT_CACERT, ...); opening fails if VAULT_ADDR is not set,
// unless config= names a configuration with a Keyring. A parameter that is malformed,
// repeated, empty or given to the wrong side (fields on a subscription, dlq on a topic) is
// an error naming it.
//
// # Undecryptable messages
//
// The portable Subscription treats a driver error as the end of the subscription, so a
// message that cannot be decrypted is never returned as an error. What becomes of it
// depends on its class (cryptsub.DecryptError.Class):
//
//   - A fault of the message (tampered, not encrypted, malformed, a retired key version):
//     with dlq= it is sent, exactly as received, to the dead-letter topic with one added
//     metadata entry, DeadLetterReasonKey, naming the reason, and then acked; strip that
//     entry before replaying the message. Without dlq= it is acked and dropped, logged at
//     Warn (message ID and reason, never content) and counted (see SubscriptionCounts).
//   - A fault of the environment (Vault unreachable or slow, the token expired, revoked
//     or refused, the key missing): the message is never acked, dead-lettered or
//     dropped. If the inner subscription supports Nack, it is nacked for redelivery and
//     receiving backs off (100ms doubling to 30s); Kafka has no Nack, so there it is held
//     and decrypted again with the same backoff until it decrypts (or the subscription
//     closes, leaving it unacked for redelivery to the next run: a token that expired is
//     mended by restarting with a good one). The outage is logged once at Warn.
//
// A dead-letter send that fails is retried with the same backoff, and nothing else is
// delivered meanwhile: a message is acked only once the dead-letter topic has it.
//
// On the topic side, Sends are independent although gocloud batches them: a message that
// cannot be protected (class fault.Message, gcerrors.InvalidArgument) fails, and the
// other messages of its batch are sent; the driver interface has one error per batch, so
// their Sends report the same error, which says how many were sent.
//
// Adding a scheme is one line in broker.Schemes (or a call to Register for another mux).
package encurl

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"gocloud.dev/pubsub"

	"github.com/pubcrypt/pubcrypt/cryptsub"
	"github.com/pubcrypt/pubcrypt/crypttopic"
	"github.com/pubcrypt/pubcrypt/internal/broker"
	"github.com/pubcrypt/pubcrypt/keyring"
)

// Prefix is what turns an inner scheme into an encrypting one: "enc+" + "kafka".
const Prefix = "enc+"

// Schemes are the inner schemes registered with Prefix on pubsub.DefaultURLMux at init:
// gocloud's own drivers (broker.Schemes). Opening one whose driver is not linked into the
// program fails with gocloud's "no driver registered" error.
var Schemes = broker.Schemes

func init() {
	for _, s := range Schemes {
		Register(pubsub.DefaultURLMux(), s)
	}
}

// Register registers Prefix+innerScheme on mux for topics and subscriptions. The inner
// URL is opened on gocloud's default mux (kafka:// with pubcrypt's Kafka opener). Like
// gocloud's own registration, it panics if the scheme is already registered on mux.
func Register(mux *pubsub.URLMux, innerScheme string) {
	o := &URLOpener{Inner: strings.ToLower(innerScheme)}
	mux.RegisterTopic(Prefix+o.Inner, o)
	mux.RegisterSubscription(Prefix+o.Inner, o)
}

// DeadLetterReasonKey is the metadata entry added to a message sent to the dead-letter
// topic: why it could not be decrypted. It is outside the pubcrypt namespace; the message
// decrypts again only once it is removed.
const DeadLetterReasonKey = "dead-letter-reason"

// Config is a named configuration for advanced use, selected with config=NAME.
type Config struct {
	// Keyring is used by both sides; nil means Topic.Keyring / Subscription.Keyring, and
	// if that is nil too, a Vault keyring from the environment and vault_key/vault_mount.
	Keyring keyring.Keyring
	// Topic and Subscription are the wrappers' options. URL parameters (fields,
	// reuse_max_age) override their fields.
	Topic        crypttopic.Options
	Subscription cryptsub.Options
	// DeadLetter is the dead-letter topic URL when the URL has no dlq parameter.
	DeadLetter string
	// Logger receives the undecryptable-message warnings; nil means slog.Default().
	Logger *slog.Logger
}

var configs struct {
	sync.Mutex
	m map[string]Config
}

// RegisterConfig makes c available to URLs as config=name. Registering a name again
// replaces its configuration for URLs opened afterwards.
func RegisterConfig(name string, c Config) {
	if name == "" {
		panic("encurl: RegisterConfig: empty name")
	}
	configs.Lock()
	defer configs.Unlock()
	if configs.m == nil {
		configs.m = make(map[string]Config)
	}
	configs.m[name] = c
}

func lookupConfig(name string) (Config, bool) {
	configs.Lock()
	defer configs.Unlock()
	c, ok := configs.m[name]
	return c, ok
}

// The URL parameters this package consumes.
const (
	paramKey    = "vault_key"
	paramMount  = "vault_mount"
	paramFields = "fields"
	paramMaxAge = "reuse_max_age"
	paramDLQ    = "dlq"
	paramConfig = "config"
	paramKEK    = "kek"
	paramKEKID  = "kek_id"
)

var ownParams = map[string]bool{paramKey: true, paramMount: true, paramFields: true, paramMaxAge: true, paramDLQ: true, paramConfig: true, paramKEK: true, paramKEKID: true}

// vaultParams are the parameters of the Vault keyring: key, mount and the auth settings
// (vault_auth=approle&vault_role_id_file=..., keyring.VaultAuthSettings).
var vaultParams = []string{paramKey, paramMount}

func init() {
	for _, s := range keyring.VaultAuthSettings {
		ownParams["vault_"+s.Name] = true
		vaultParams = append(vaultParams, "vault_"+s.Name)
	}
}

// redacted is u for an error message: no password, and no kek= value (a base64key://
// URL is the key itself).
func redacted(u *url.URL) string {
	c := *u
	if c.RawQuery != "" {
		parts := strings.Split(c.RawQuery, "&")
		for i, kv := range parts {
			if k, _, _ := strings.Cut(kv, "="); k == paramKEK {
				parts[i] = paramKEK + "=REDACTED"
			}
		}
		c.RawQuery = strings.Join(parts, "&")
	}
	return c.Redacted()
}

// params are the parsed parameters of an enc+ URL; inner is the URL to open underneath.
type params struct {
	inner  string
	values map[string]string
}

// parseURL splits u into the inner URL and this package's parameters, refusing those that
// do not apply to kind ("topic" or "subscription").
func parseURL(u *url.URL, kind string) (params, error) {
	p := params{values: make(map[string]string)}
	var keep []string
	for _, kv := range strings.Split(u.RawQuery, "&") {
		if kv == "" {
			continue
		}
		rawKey, rawVal, _ := strings.Cut(kv, "=")
		key, err := url.QueryUnescape(rawKey)
		if err != nil || !ownParams[key] {
			keep = append(keep, kv)
			continue
		}
		val, err := url.QueryUnescape(rawVal)
		if err != nil {
			return p, fmt.Errorf("parameter %s: invalid URL escaping: %w", key, err)
		}
		if _, dup := p.values[key]; dup {
			return p, fmt.Errorf("parameter %s: given more than once", key)
		}
		if val == "" {
			return p, fmt.Errorf("parameter %s: empty value", key)
		}
		switch {
		case kind == "topic" && key == paramDLQ:
			return p, fmt.Errorf("parameter %s: applies to subscriptions only", key)
		case kind == "subscription" && (key == paramFields || key == paramMaxAge):
			return p, fmt.Errorf("parameter %s: applies to topics only (a subscription reads the policy from each message)", key)
		}
		p.values[key] = val
	}
	inner := *u
	inner.Scheme = strings.TrimPrefix(strings.ToLower(u.Scheme), Prefix)
	inner.RawQuery = strings.Join(keep, "&")
	inner.ForceQuery = false
	p.inner = inner.String()
	return p, nil
}

// configName says where the configuration of p comes from, for an error.
func (p params) configName() string {
	if name, ok := p.values[paramConfig]; ok {
		return paramConfig + "=" + name
	}
	return "the URLOpener's Config"
}

// resolve returns the configuration p selects and the keyring to use (from the config or
// from Vault's environment).
func (p params) resolve(ctx context.Context, base Config, pick func(Config) keyring.Keyring) (Config, keyring.Keyring, error) {
	cfg := base
	if name, ok := p.values[paramConfig]; ok {
		c, found := lookupConfig(name)
		if !found {
			return cfg, nil, fmt.Errorf("parameter %s: no configuration registered as %q (encurl.RegisterConfig)", paramConfig, name)
		}
		cfg = c
	}
	kr := cfg.Keyring
	if kr == nil {
		kr = pick(cfg)
	}
	if _, ok := p.values[paramKEKID]; ok {
		if _, ok := p.values[paramKEK]; !ok {
			return cfg, nil, fmt.Errorf("parameter %s: needs %s", paramKEKID, paramKEK)
		}
	}
	if kek, ok := p.values[paramKEK]; ok {
		for _, k := range vaultParams {
			if _, ok := p.values[k]; ok {
				return cfg, nil, fmt.Errorf("parameter %s: not allowed with %s, which replaces Vault Transit", k, paramKEK)
			}
		}
		if kr != nil {
			return cfg, nil, fmt.Errorf("parameter %s: not allowed with %s, whose keyring is set", paramKEK, p.configName())
		}
		k, err := keyring.OpenKeeper(ctx, kek, keyring.KeeperOptions{KeyID: p.values[paramKEKID]})
		if err != nil {
			return cfg, nil, fmt.Errorf("parameter %s: %w", paramKEK, err)
		}
		return cfg, k, nil
	}
	if kr != nil {
		for _, k := range vaultParams {
			if _, ok := p.values[k]; ok {
				return cfg, nil, fmt.Errorf("parameter %s: not allowed with %s, whose keyring is set", k, p.configName())
			}
		}
		return cfg, kr, nil
	}
	if os.Getenv("VAULT_ADDR") == "" && os.Getenv("VAULT_AGENT_ADDR") == "" {
		return cfg, nil, errors.New("VAULT_ADDR is not set: enc+ URLs take Vault's address and token from Vault's environment variables (VAULT_ADDR, VAULT_TOKEN, ...)")
	}
	key := p.values[paramKey]
	if key == "" {
		key = keyring.DefaultKey
	}
	auth, err := keyring.VaultAuthFrom(func(name string) string { return p.values["vault_"+name] })
	if err != nil {
		return cfg, nil, fmt.Errorf("parameter vault_%s", strings.TrimPrefix(err.Error(), "keyring: "))
	}
	v, err := keyring.NewVault(keyring.VaultOptions{Key: key, Mount: p.values[paramMount], Auth: auth})
	if err != nil {
		var oe *keyring.OptionError
		switch {
		case errors.As(err, &oe) && strings.HasPrefix(oe.Option, "VaultOptions.Auth."):
			return cfg, nil, fmt.Errorf("parameter vault_auth=%s: %w", auth.Method, err)
		case errors.As(err, &oe) && oe.Option == "VaultOptions.Mount":
			return cfg, nil, fmt.Errorf("parameter %s: %w", paramMount, err)
		case errors.As(err, &oe) && oe.Option == "VaultOptions.Key":
			return cfg, nil, fmt.Errorf("parameter %s: %w", paramKey, err)
		}
		return cfg, nil, err // Vault's environment variables (VAULT_CACERT, ...)
	}
	return cfg, v, nil
}

// URLOpener opens the enc+ URLs of one inner scheme, in gocloud's style: it is what
// Register puts on a mux. Register one of your own on a pubsub.URLMux to give its URLs a
// configuration (a keyring, options) without the process-wide RegisterConfig:
//
//	mux := new(pubsub.URLMux)
//	o := &encurl.URLOpener{Inner: "kafka", Config: encurl.Config{Keyring: keys}}
//	mux.RegisterTopic("enc+kafka", o)
//	mux.RegisterSubscription("enc+kafka", o)
//	top, err := mux.OpenTopic(ctx, "enc+kafka://orders")
type URLOpener struct {
	// Inner is the scheme of the inner URL, the part after "enc+": "kafka", "mem", ...
	Inner string
	// Config is the configuration of URLs without config=; a config= parameter
	// replaces it.
	Config Config
}

// OpenTopicURL opens an encrypting topic (pubsub.TopicURLOpener).
func (o *URLOpener) OpenTopicURL(ctx context.Context, u *url.URL) (*pubsub.Topic, error) {
	t, err := o.openTopic(ctx, u)
	if err != nil {
		return nil, fmt.Errorf("encurl: open topic %s: %w", redacted(u), err)
	}
	return t, nil
}

func (o *URLOpener) openTopic(ctx context.Context, u *url.URL) (*pubsub.Topic, error) {
	p, err := parseURL(u, "topic")
	if err != nil {
		return nil, err
	}
	cfg, kr, err := p.resolve(ctx, o.Config, func(c Config) keyring.Keyring { return c.Topic.Keyring })
	if err != nil {
		return nil, err
	}
	opts := cfg.Topic
	opts.Keyring = kr
	if s, ok := p.values[paramFields]; ok {
		policy, err := crypttopic.ParseFieldPolicy(s)
		if err != nil {
			return nil, fmt.Errorf("parameter %s: %w", paramFields, err)
		}
		opts.Fields = policy
	}
	if s, ok := p.values[paramMaxAge]; ok {
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 {
			return nil, fmt.Errorf("parameter %s: %q is not a positive duration such as 5m", paramMaxAge, s)
		}
		opts.Reuse.MaxAge = d
	}
	if opts.Logger == nil {
		opts.Logger = cfg.Logger
	}
	ct, err := crypttopic.Open(ctx, p.inner, opts)
	if err != nil {
		if _, ok := p.values[paramFields]; ok && errors.Is(err, crypttopic.ErrFieldPolicy) {
			return nil, fmt.Errorf("parameter %s: %w", paramFields, err)
		}
		return nil, err
	}
	return newTopic(ct), nil
}

// OpenSubscriptionURL opens a decrypting subscription (pubsub.SubscriptionURLOpener).
func (o *URLOpener) OpenSubscriptionURL(ctx context.Context, u *url.URL) (*pubsub.Subscription, error) {
	s, err := o.openSubscription(ctx, u)
	if err != nil {
		return nil, fmt.Errorf("encurl: open subscription %s: %w", redacted(u), err)
	}
	return s, nil
}

func (o *URLOpener) openSubscription(ctx context.Context, u *url.URL) (*pubsub.Subscription, error) {
	p, err := parseURL(u, "subscription")
	if err != nil {
		return nil, err
	}
	cfg, kr, err := p.resolve(ctx, o.Config, func(c Config) keyring.Keyring { return c.Subscription.Keyring })
	if err != nil {
		return nil, err
	}
	opts := cfg.Subscription
	opts.Keyring = kr
	if opts.Logger == nil {
		opts.Logger = cfg.Logger
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	dlqURL := cfg.DeadLetter
	if s, ok := p.values[paramDLQ]; ok {
		dlqURL = s
	}
	var dlq *pubsub.Topic
	if dlqURL != "" {
		if dlq, err = broker.OpenTopic(ctx, dlqURL); err != nil {
			return nil, fmt.Errorf("parameter %s: %w", paramDLQ, err)
		}
	}
	cs, err := cryptsub.Open(ctx, p.inner, opts)
	if err != nil {
		if dlq != nil {
			_ = dlq.Shutdown(ctx)
		}
		return nil, err
	}
	return newSubscription(cs, dlq, broker.CapabilitiesFor(o.Inner).CanNack, log), nil
}
