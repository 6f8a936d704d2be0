package crypttopic_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestLinksNoCloudSDK: the library packages link only the Kafka driver their own opener
// needs; a gocloud driver registers itself when the application imports it. When
// internal/broker blank-imported every driver, a Kafka-only program with crypttopic and
// cryptsub carried every cloud SDK (832 packages, 45.0 MB instead of 24.3 MB).
func TestLinksNoCloudSDK(t *testing.T) {
	sdks := []string{"github.com/aws/", "github.com/Azure/", "cloud.google.com/go/pubsub", "github.com/nats-io/", "github.com/rabbitmq/"}
	for _, pkg := range []string{"github.com/pubcrypt/pubcrypt/crypttopic", "github.com/pubcrypt/pubcrypt/cryptsub", "github.com/pubcrypt/pubcrypt/encurl", "github.com/pubcrypt/pubcrypt/keyring"} {
		out, err := exec.Command("go", "list", "-deps", pkg).Output()
		if err != nil {
			t.Fatalf("go list -deps %s: %v", pkg, err)
		}
		for _, dep := range strings.Fields(string(out)) {
			for _, sdk := range sdks {
				if strings.HasPrefix(dep, sdk) {
					t.Errorf("%s links %s", pkg, dep)
				}
			}
		}
	}
}
