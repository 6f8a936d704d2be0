// Package e2e holds end-to-end tests with outside clients and restricted credentials.
//
// The tests run pubcrypt against a real HashiCorp Vault dev server and an in-process
// Kafka-protocol broker, and look at the result from outside pubcrypt:
//
//   - an outside Kafka client (Debian's kcat, as a broker admin would use it) reads the
//     topics and must find the envelope headers but none of the plaintext that was sent;
//   - producers and consumers authenticate with Vault tokens that hold only the policies
//     of terraform/vault/main.tf (read from that file at test time), and each role must be
//     refused the other's work with keyring.ErrPermissionDenied; the dev server loads
//     pubcrypt's FPE plugin, so that fpe(vault) fields are tested under those policies too.
//
// kcat is installed by scripts/install-test-tools.sh; without it the kcat test fails. The
// FPE plugin is built by scripts/install-fpe-plugin.sh ($PUBCRYPT_FPE_PLUGIN_BIN);
// without it the package fails.
// The package has no non-test code.
package e2e
