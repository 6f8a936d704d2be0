// Package fpe encrypts numbers into numbers of the same shape, so a card number
// in a JSON field stays a card number that schemas, validators and column
// widths accept.
//
// The cipher is FF1 from NIST SP 800-38G: a ten-round Feistel network over a
// string of numerals in some radix, whose round function is AES-CBC-MAC. It
// is a keyed permutation of all strings of one length, so it encrypts and
// decrypts without expansion or nonce. testdata/fpe holds NIST's nine sample
// vectors (ff1_nist.json), longer FF1 inputs (ff1_long.json) and the card
// construction (card.json).
//
// The tweak is public data that selects one of many permutations under the
// same key, like a nonce that need not be unique: use the field name, tenant or
// record type, so equal numbers in different places encrypt differently.
// Decryption needs the same tweak. The key (16, 24 or 32 bytes) comes from the
// caller's key service; one key should serve one purpose.
//
// Small domains are weak: Feistel ciphers over few values fall to known
// attacks, and an attacker can tabulate them. The 2025 draft of SP 800-38G
// Rev. 1 therefore requires radix^length ≥ 1,000,000, which this package
// enforces on every call (6 decimal digits, 4 base-36 characters); a shorter
// input is ErrDomainTooSmall, never a silently weaker encryption. FF3, which
// the draft withdraws, is not offered.
//
// What FPE does not hide: the length and format of the value, every digit kept
// in clear (a card's BIN and last four, when asked), and equality. It is
// deterministic: the same number under the same key and tweak always gives the
// same output, so equal card numbers can be joined and counted across records.
// That is often the point (lookups, deduplication), but it means an
// adversary who sees many ciphertexts learns their frequencies. Use the
// message envelope, not FPE, for data that need not keep its shape.
//
// EncryptCard and DecryptCard handle card numbers (separators, kept BIN and
// last four, Luhn-valid output); EncryptDigits and DecryptDigits any digit
// string with separators. An FF1 holds no mutable state and is safe for
// concurrent use.
package fpe
