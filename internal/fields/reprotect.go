package fields

// ManifestPolicy returns the rules of a field manifest (the "pubcrypt-fields" entry): the
// policy rules that selected at least one value of that message, in the producer's order
// (docs/FIELDS.md section 6). Sending the decrypted body again under this policy protects
// the same values in the same modes, under the keys' latest versions: what re-encryption
// after a rotation needs. The manifest is parsed strictly but not authenticated here; read
// it only from a message that opened.
func ManifestPolicy(manifest string) (Policy, error) {
	m, err := parseManifest(manifest, nil)
	if err != nil {
		return nil, err
	}
	return m.rules, nil
}
