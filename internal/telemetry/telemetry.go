// Package telemetry holds pubcrypt's OpenTelemetry instruments, one copy of each, for the
// codec, the keyring and the CLI to record into.
//
// They come from the global MeterProvider (otel.Meter), so a program that embeds the
// library sees them through whatever exporter it installs, and one that installs none
// pays for a no-op. Instruments made before a provider is installed are forwarded to it
// by otel's global package.
//
// Attributes come only from fixed, small sets (mode, op, class, result, ...), built
// once here: never a key, token, plaintext, message ID, key name or subject, and no
// allocation per message to build them.
package telemetry

import (
	"context"
	"sync"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/pubcrypt/pubcrypt/fault"
)

// ScopeName is the instrumentation scope of every pubcrypt instrument.
const ScopeName = "github.com/pubcrypt/pubcrypt"

// Mode is how a message was protected.
type Mode uint8

const (
	Body      Mode = iota // the whole body under a data key
	Fields                // chosen JSON fields
	Plaintext             // opened only: passed through without an envelope (AllowPlaintext)
	numModes
)

var modeNames = [numModes]string{"body", "fields", "plaintext"}

// Op is the side a failure happened on.
type Op uint8

const (
	Seal Op = iota
	Open
	numOps
)

var opNames = [numOps]string{"seal", "open"}

// VaultOp is the kind of a Vault request, from its path.
type VaultOp uint8

const (
	VaultDataKey VaultOp = iota // transit/datakey/...
	VaultEncrypt
	VaultDecrypt
	VaultRewrap
	VaultHMAC  // transit/hmac/... (FPE key derivation)
	VaultKeys  // transit/keys/... (read, rotate)
	VaultAuth  // auth/... (logins)
	VaultToken // auth/token/... (lookup, renew)
	VaultSys   // sys/...
	VaultOther
	numVaultOps
)

var vaultOpNames = [numVaultOps]string{"datakey", "encrypt", "decrypt", "rewrap", "hmac", "keys", "auth", "token", "sys", "other"}

// VaultResult is how a Vault request ended.
type VaultResult uint8

const (
	VaultOK          VaultResult = iota // 2xx (and 1xx, 3xx)
	VaultClientError                    // 4xx: refused (permission denied, not found, ...)
	VaultServerError                    // 5xx: sealed, overloaded, refused for size
	VaultNetwork                        // no answer: unreachable, timed out, cancelled
	numVaultResults
)

var vaultResultNames = [numVaultResults]string{"ok", "4xx", "5xx", "error"}

// VaultResultOf classifies an HTTP answer (err non-nil: none came).
func VaultResultOf(status int, err error) VaultResult {
	switch {
	case err != nil:
		return VaultNetwork
	case status >= 500:
		return VaultServerError
	case status >= 400:
		return VaultClientError
	}
	return VaultOK
}

// KeyReason is why a data key was generated.
type KeyReason uint8

const (
	KeyFirst      KeyReason = iota // none yet, or the last one was dropped (Expire)
	KeyAge                         // ReusePolicy.MaxAge reached
	KeyMessages                    // ReusePolicy.MaxMessages reached
	KeyBytes                       // ReusePolicy.MaxBytes reached
	KeyPerMessage                  // ReusePolicy.PerMessage
	numKeyReasons
)

var keyReasonNames = [numKeyReasons]string{"first", "max_age", "max_messages", "max_bytes", "per_message"}

// BridgeFault is what a bridge did with a message that can never be protected.
type BridgeFault uint8

const (
	BridgeDeadLettered BridgeFault = iota
	BridgeSkipped
	numBridgeFaults
)

var bridgeFaultNames = [numBridgeFaults]string{"dead-letter", "skip"}

// instruments are the instruments and their precomputed attribute options.
type instruments struct {
	sealed, opened           metric.Int64Counter
	sealedBytes, openedBytes metric.Int64Counter
	failures                 metric.Int64Counter
	vaultRequests            metric.Int64Counter
	vaultDuration            metric.Float64Histogram
	dataKeys                 metric.Int64Counter
	cache                    metric.Int64Counter
	forwarded, bridgeFaults  metric.Int64Counter
	logins                   metric.Int64Counter

	// Option slices built once: a variadic argument built per call escapes to the heap.
	mode        [numModes][]metric.AddOption
	failure     [numOps][3][]metric.AddOption // by fault.Class (None unused)
	vault       [numVaultOps][numVaultResults][]metric.AddOption
	vaultRecord [numVaultOps][numVaultResults][]metric.RecordOption
	keyReason   [numKeyReasons][]metric.AddOption
	cacheResult [2][]metric.AddOption // miss, hit
	loginResult [2][]metric.AddOption // failed, ok
	bridgeFault [numBridgeFaults][]metric.AddOption
}

func opt(kvs ...attribute.KeyValue) []metric.AddOption {
	return []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(kvs...))}
}

// get returns the instruments, made on first use from the global MeterProvider. An
// instrument that cannot be made (a provider refusing its name) is otel's no-op one:
// telemetry never fails the data path.
var get = sync.OnceValue(func() *instruments {
	m := otel.Meter(ScopeName)
	in := &instruments{}
	in.sealed, _ = m.Int64Counter("pubcrypt.messages.sealed", metric.WithUnit("{message}"),
		metric.WithDescription("Messages protected for sending, by mode (body, fields)."))
	in.opened, _ = m.Int64Counter("pubcrypt.messages.opened", metric.WithUnit("{message}"),
		metric.WithDescription("Messages authenticated and decrypted, by mode (body, fields; plaintext: passed through without an envelope)."))
	in.sealedBytes, _ = m.Int64Counter("pubcrypt.sealed.bytes", metric.WithUnit("By"),
		metric.WithDescription("Plaintext body bytes of the messages sealed, by mode."))
	in.openedBytes, _ = m.Int64Counter("pubcrypt.opened.bytes", metric.WithUnit("By"),
		metric.WithDescription("Plaintext body bytes of the messages opened, by mode."))
	in.failures, _ = m.Int64Counter("pubcrypt.failures", metric.WithUnit("{message}"),
		metric.WithDescription("Messages that could not be sealed or opened, by op (seal, open) and fault class (message: never passes; environment: passes once mended)."))
	in.vaultRequests, _ = m.Int64Counter("pubcrypt.vault.requests", metric.WithUnit("{request}"),
		metric.WithDescription("HTTP requests to Vault, retries included, by op and result (ok, 4xx, 5xx, error: no answer)."))
	in.vaultDuration, _ = m.Float64Histogram("pubcrypt.vault.request.duration", metric.WithUnit("s"),
		metric.WithDescription("Time to Vault's answer (headers) per HTTP request, by op and result."),
		metric.WithExplicitBucketBoundaries(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
	in.dataKeys, _ = m.Int64Counter("pubcrypt.datakeys.generated", metric.WithUnit("{key}"),
		metric.WithDescription("Data keys generated by the send side, by reason (first, max_age, max_messages, max_bytes, per_message)."))
	in.cache, _ = m.Int64Counter("pubcrypt.datakeys.cache.requests", metric.WithUnit("{request}"),
		metric.WithDescription("Lookups in the receive side's cache of unwrapped data keys, by result (hit, miss: the key service is asked)."))
	in.forwarded, _ = m.Int64Counter("pubcrypt.bridge.forwarded", metric.WithUnit("{message}"),
		metric.WithDescription("Messages the encrypt bridge sent encrypted and acknowledged at the source."))
	in.logins, _ = m.Int64Counter("pubcrypt.vault.logins", metric.WithUnit("{login}"),
		metric.WithDescription("Logins to Vault by the keyring's auth method (approle, jwt, ...), by result (ok, failed); a static token makes none."))
	in.bridgeFaults, _ = m.Int64Counter("pubcrypt.bridge.message_faults", metric.WithUnit("{message}"),
		metric.WithDescription("Source messages the encrypt bridge could never protect, by action (dead-letter, skip)."))

	for i := range numModes {
		in.mode[i] = opt(attribute.String("mode", modeNames[i]))
	}
	for o := range numOps {
		for _, c := range []fault.Class{fault.Message, fault.Environment} {
			in.failure[o][c] = opt(attribute.String("op", opNames[o]), attribute.String("class", c.String()))
		}
	}
	for o := range numVaultOps {
		for r := range numVaultResults {
			set := attribute.NewSet(attribute.String("op", vaultOpNames[o]), attribute.String("result", vaultResultNames[r]))
			in.vault[o][r] = []metric.AddOption{metric.WithAttributeSet(set)}
			in.vaultRecord[o][r] = []metric.RecordOption{metric.WithAttributeSet(set)}
		}
	}
	for r := range numKeyReasons {
		in.keyReason[r] = opt(attribute.String("reason", keyReasonNames[r]))
	}
	in.cacheResult[0] = opt(attribute.String("result", "miss"))
	in.cacheResult[1] = opt(attribute.String("result", "hit"))
	in.loginResult[0] = opt(attribute.String("result", "failed"))
	in.loginResult[1] = opt(attribute.String("result", "ok"))
	for a := range numBridgeFaults {
		in.bridgeFault[a] = opt(attribute.String("action", bridgeFaultNames[a]))
	}
	return in
})

// Sealed records one message sealed in mode m, of n plaintext body bytes.
func Sealed(ctx context.Context, m Mode, n int) {
	in := get()
	in.sealed.Add(ctx, 1, in.mode[m]...)
	in.sealedBytes.Add(ctx, int64(n), in.mode[m]...)
}

// Opened records one message opened in mode m, of n plaintext body bytes.
func Opened(ctx context.Context, m Mode, n int) {
	in := get()
	in.opened.Add(ctx, 1, in.mode[m]...)
	in.openedBytes.Add(ctx, int64(n), in.mode[m]...)
}

// Failed records n messages that op could not handle, for a fault of class c.
func Failed(ctx context.Context, op Op, c fault.Class, n int) {
	if c != fault.Message {
		c = fault.Environment // as fault.ClassOf: unclassified is the environment's
	}
	in := get()
	in.failures.Add(ctx, int64(n), in.failure[op][c]...)
}

// VaultRequest records one HTTP request to Vault and how long its answer took.
func VaultRequest(ctx context.Context, op VaultOp, r VaultResult, d time.Duration) {
	in := get()
	in.vaultRequests.Add(ctx, 1, in.vault[op][r]...)
	in.vaultDuration.Record(ctx, d.Seconds(), in.vaultRecord[op][r]...)
}

// DataKeyGenerated records one new data key on the send side.
func DataKeyGenerated(ctx context.Context, r KeyReason) {
	in := get()
	in.dataKeys.Add(ctx, 1, in.keyReason[r]...)
}

// CacheLookup records one lookup in the unwrap cache.
func CacheLookup(ctx context.Context, hit bool) {
	in := get()
	in.cache.Add(ctx, 1, in.cacheResult[index(hit)]...)
}

// index is 1 for true, 0 for false: the index of a two-valued label's options.
func index(b bool) int {
	if b {
		return 1
	}
	return 0
}

// Forwarded records one message forwarded by the encrypt bridge.
func Forwarded(ctx context.Context) {
	get().forwarded.Add(ctx, 1)
}

// BridgeMessageFault records a source message the bridge dead-lettered or skipped.
func BridgeMessageFault(ctx context.Context, a BridgeFault) {
	in := get()
	in.bridgeFaults.Add(ctx, 1, in.bridgeFault[a]...)
}

// VaultLogin records one login to Vault, successful or not.
func VaultLogin(ctx context.Context, ok bool) {
	in := get()
	in.logins.Add(ctx, 1, in.loginResult[index(ok)]...)
}
