// Package codec is the one place where messages are protected and opened. crypttopic
// (send), cryptsub (receive) and, through them, the enc+ URL driver are adapters over
// gocloud's portable types; the work itself — choosing whole-body or field protection
// from the policy, the data-key, unwrap and FPE-key caches, the broker's limits, batching
// the key service's calls, reporting how each message was protected — happens here, once.
//
// The codec is batch-first: Sealer.Seal and Opener.OpenBatch take many messages and
// answer per message, so that the protected fields of a whole batch cost one call to the
// key service per key, and one message at fault never fails the others. The formats are
// those of docs/FORMAT.md (internal/envelope) and docs/FIELDS.md (internal/fields).
//
// Every error has a fault class (package fault): a message's own fault is reported for
// that message; a fault of the environment is reported for the batch and blames no
// message.
package codec
