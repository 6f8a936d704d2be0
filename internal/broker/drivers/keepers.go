package drivers

// The gocloud secrets drivers, so that keyring.OpenKeeper opens their URL schemes in the
// CLI and the tests. The keyring package imports none of them, for the reason above.
import (
	_ "gocloud.dev/secrets/awskms"        // awskms://
	_ "gocloud.dev/secrets/azurekeyvault" // azurekeyvault://
	_ "gocloud.dev/secrets/gcpkms"        // gcpkms://
	_ "gocloud.dev/secrets/hashivault"    // hashivault:// (its own module, v0.45.0, beside core v0.49.0)
	_ "gocloud.dev/secrets/localsecrets"  // base64key://
)
