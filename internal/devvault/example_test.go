package devvault_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/pubcrypt/pubcrypt/internal/devvault"
)

// A Vault that survives a crash: kill it mid-test, start it again, and its keys are there.
func ExampleStart_persistent() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "vault-")
	defer os.RemoveAll(dir)
	s, err := devvault.Start(ctx, devvault.Options{StorageDir: filepath.Join(dir, "vault"), Keys: []string{"orders"}})
	if err != nil {
		panic(err)
	}
	defer s.Stop()

	s.Kill()            // SIGKILL, as a crash would
	_ = s.Restart(ctx)  // same address, same storage, unsealed again
	fmt.Println(s.Addr) // unchanged: clients reconnect to it
}
