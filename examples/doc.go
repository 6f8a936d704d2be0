// Package examples holds runnable examples of pubcrypt, one per first task a user has.
// Each is an Example function that `go test ./examples/` runs against a real Vault dev
// server, and checks against its // Output: block:
//
//   - Example_encryptBodies: open an encrypting topic and a decrypting subscription by
//     URL, send a message, receive the producer's plaintext.
//   - Example_fieldPolicy: protect chosen fields of a JSON body (a name by Vault Transit,
//     a card number by format-preserving encryption) and compare what the broker holds
//     with what the consumer gets.
//   - Example_structTags: let `pubcrypt:"..."` struct tags choose the protected fields
//     of a value sent with (*crypttopic.Topic).SendValue.
//   - Example_swapBroker: run the same code on an in-memory topic and on Kafka; only the
//     URLs change.
//   - Example_undecryptable: a forged and a plaintext message on the topic come back as
//     a *cryptsub.DecryptError; the consumer acks them and goes on.
//
// The examples read Vault's address and token from VAULT_ADDR and VAULT_TOKEN, as a
// program would; the test binary's TestMain points them at the dev server it starts.
package examples
