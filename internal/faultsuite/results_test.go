package faultsuite

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "write the table of results into the README (a full, passing run only)")

// result is one row of the table: one side of one scenario.
type result struct {
	id       string // "1.2": scenario number, then row; sorts the table
	scenario string
	count
	leaked int
	bound  int // duplicates allowed
	note   string
}

var (
	resultsMu sync.Mutex
	results   []result
)

// record checks one row — nothing lost, nothing leaked, duplicates within the bound, every
// message as it was sent — logs it and keeps it for the table.
func record(t *testing.T, r result) {
	t.Helper()
	if r.lost != 0 {
		t.Errorf("%s: %d of %d lost", r.scenario, r.lost, r.sent)
	}
	if len(r.bad) > 0 {
		t.Errorf("%s: %d message(s) arrived different from what was sent, or not at all decryptable: %v", r.scenario, len(r.bad), first(r.bad, 5))
	}
	if r.leaked != 0 {
		t.Errorf("%s: %d leak(s)", r.scenario, r.leaked)
	}
	if r.dup > r.bound {
		t.Errorf("%s: %d duplicates, above the bound of %d", r.scenario, r.dup, r.bound)
	}
	t.Logf("RESULT | %s | sent %d | received %d | lost %d | dup %d (bound %d) | leaked %d | %s", r.scenario, r.sent, r.received, r.lost, r.dup, r.bound, r.leaked, r.note)
	resultsMu.Lock()
	results = append(results, r)
	resultsMu.Unlock()
}

// checkLeaks scans the rig for leaks, fails the test on any and returns how many.
func (r *rig) checkLeaks() int {
	r.t.Helper()
	hits := r.leaks()
	if len(hits) > 0 {
		r.t.Errorf("%d leak(s), e.g. %v", len(hits), first(hits, 10))
	}
	return len(hits)
}

func first(s []string, n int) []string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// cited are the scenarios of issue 8 that other packages' tests cover; the table names them.
var cited = []result{
	{id: "2.5", scenario: "receive-files: broker stopped 12 s mid-file, then Vault cut 5 s", note: "cmd/pubcrypt `TestReceiveFilesRidesOutOutages`: both files byte-identical, nothing refused"},
	{id: "5.5", scenario: "enc+ subscription (Kafka, and a broker that nacks) with an expired token, then a good one", note: "encurl `TestExpiredTokenOnKafkaDropsNothing`, `TestExpiredTokenNacks`: nothing dropped, every message arrives"},
	{id: "5.6", scenario: "consume --skip-undecryptable with an expired token, then a good one", note: "cmd/pubcrypt `TestConsumeExpiredTokenAcksNothing`: nothing skipped or acked, then every message in the same group"},
	{id: "4.4", scenario: "receive-files SIGKILLed at 1/3 of a 300 MiB file, restarted", note: "cmd/pubcrypt `TestReceiveFilesResumesAfterKill`: completes byte-identical without a re-send; no plaintext partial larger than one chunk"},
	{id: "6.1", scenario: "receive-files: destination read-only at start and mid-transfer", note: "cmd/pubcrypt `TestReceiveFilesUnwritableDir` (Linux, root: bind mount): exit 3 naming the environment fault, nothing acked, a rerun finishes"},
	{id: "6.2", scenario: "receive-files: disk full while storing and while assembling", note: "cmd/pubcrypt `TestReceiveFilesDiskFull` (Linux, root: 2 MiB tmpfs): exit 3, nothing acked, a rerun on a larger disk finishes"},
	{id: "7.5", scenario: "silent Kafka at start: produce, peek, send-files, receive-files", note: "cmd/pubcrypt `TestSilentKafkaFailsAtStart`: exit 3 after 30 s each"},
}

func TestMain(m *testing.M) {
	flag.Parse()
	// The scenarios wait on outages far more than they compute, and each has its own
	// servers: run them all at once unless -parallel says otherwise.
	explicit := false
	flag.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "test.parallel" })
	if !explicit {
		_ = flag.Set("test.parallel", "32")
	}
	start := time.Now()
	code := m.Run()
	took := time.Since(start)
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	table := markdown(took)
	if testing.Verbose() {
		fmt.Println(table)
	}
	if *update {
		filtered := false
		flag.Visit(func(f *flag.Flag) { filtered = filtered || f.Name == "test.run" || f.Name == "test.skip" })
		switch {
		case code != 0:
			fmt.Fprintln(os.Stderr, "faultsuite: -update: the run failed; README left as it was")
		case filtered:
			fmt.Fprintln(os.Stderr, "faultsuite: -update needs the whole suite (no -run or -skip); README left as it was")
		default:
			if err := writeREADME(table); err != nil {
				fmt.Fprintln(os.Stderr, "faultsuite: -update:", err)
				code = 1
			}
		}
	}
	os.Exit(code)
}

// markdown renders the results (and the cited rows) as the README's table.
func markdown(took time.Duration) string {
	resultsMu.Lock()
	rows := append(append([]result(nil), results...), cited...)
	resultsMu.Unlock()
	sort.SliceStable(rows, func(i, j int) bool { return lessID(rows[i].id, rows[j].id) })
	var b strings.Builder
	fmt.Fprintf(&b, "Measured %s, `go test ./internal/faultsuite/` took %.0f s on %s (parallel scenarios, each with its own Vault and broker).\n\n",
		time.Now().UTC().Format("2006-01-02"), took.Seconds(), machine())
	b.WriteString("| # | scenario | sent | received | lost | dup (bound) | leaked | note |\n|---|---|---|---|---|---|---|---|\n")
	for _, r := range rows {
		if r.sent == 0 && r.scenario != "" && strings.Contains(r.note, "`Test") {
			fmt.Fprintf(&b, "| %s | %s | — | — | — | — | — | %s |\n", r.id, r.scenario, r.note)
			continue
		}
		fmt.Fprintf(&b, "| %s | %s | %d | %d | %d | %d (%d) | %d | %s |\n", r.id, r.scenario, r.sent, r.received, r.lost, r.dup, r.bound, r.leaked, r.note)
	}
	return b.String()
}

func lessID(a, b string) bool {
	var a1, a2, b1, b2 int
	fmt.Sscanf(a, "%d.%d", &a1, &a2)
	fmt.Sscanf(b, "%d.%d", &b1, &b2)
	if a1 != b1 {
		return a1 < b1
	}
	return a2 < b2
}

func machine() string {
	return fmt.Sprintf("%d cores", runtime.NumCPU())
}

const (
	tableBegin = "<!-- faultsuite table: generated by `go test ./internal/faultsuite/ -v -update`; do not edit -->"
	tableEnd   = "<!-- end of faultsuite table -->"
)

// writeREADME replaces the table between the markers in the repository's README.
func writeREADME(table string) error {
	path := filepath.Join("..", "..", "README.md")
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	i, j := bytes.Index(b, []byte(tableBegin)), bytes.Index(b, []byte(tableEnd))
	if i < 0 || j < i {
		return fmt.Errorf("%s has no faultsuite table markers", path)
	}
	var out bytes.Buffer
	out.Write(b[:i+len(tableBegin)])
	out.WriteString("\n")
	out.WriteString(table)
	out.Write(b[j:])
	return os.WriteFile(path, out.Bytes(), 0o644)
}
