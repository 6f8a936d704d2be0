package telemetry_test

import (
	"context"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/pubcrypt/pubcrypt/fault"
	"github.com/pubcrypt/pubcrypt/internal/telemetry"
)

// TestInstruments makes the instruments before a provider is installed (as a library's are
// made before a program installs its exporter), records through every function and checks
// the names, the sums and that every attribute comes from the fixed sets.
func TestInstruments(t *testing.T) {
	ctx := context.Background()
	telemetry.Sealed(ctx, telemetry.Body, 10) // instruments made now, provider later: not counted
	reader := sdkmetric.NewManualReader()
	otel.SetMeterProvider(sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)))

	telemetry.Sealed(ctx, telemetry.Body, 100)
	telemetry.Sealed(ctx, telemetry.Fields, 50)
	telemetry.Opened(ctx, telemetry.Plaintext, 7)
	telemetry.Failed(ctx, telemetry.Seal, fault.Message, 2)
	telemetry.Failed(ctx, telemetry.Open, fault.None, 1) // unclassified: environment
	telemetry.VaultRequest(ctx, telemetry.VaultDataKey, telemetry.VaultOK, 2*time.Millisecond)
	telemetry.VaultRequest(ctx, telemetry.VaultDecrypt, telemetry.VaultResultOf(0, context.DeadlineExceeded), time.Second)
	telemetry.DataKeyGenerated(ctx, telemetry.KeyAge)
	telemetry.CacheLookup(ctx, true)
	telemetry.CacheLookup(ctx, false)
	telemetry.VaultLogin(ctx, true)
	telemetry.VaultLogin(ctx, false)
	telemetry.Forwarded(ctx)
	telemetry.BridgeMessageFault(ctx, telemetry.BridgeSkipped)

	var rm metricdata.ResourceMetrics
	if err := reader.Collect(ctx, &rm); err != nil {
		t.Fatal(err)
	}
	allowed := map[attribute.Key]bool{"mode": true, "op": true, "class": true, "result": true, "reason": true, "action": true}
	sums := map[string]map[string]int64{} // instrument -> attribute set -> sum
	var histCount uint64
	for _, sm := range rm.ScopeMetrics {
		if sm.Scope.Name != telemetry.ScopeName {
			t.Errorf("scope %q", sm.Scope.Name)
		}
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				for _, p := range d.DataPoints {
					check(t, m.Name, p.Attributes, allowed)
					if sums[m.Name] == nil {
						sums[m.Name] = map[string]int64{}
					}
					sums[m.Name][p.Attributes.Encoded(attribute.DefaultEncoder())] += p.Value
				}
			case metricdata.Histogram[float64]:
				for _, p := range d.DataPoints {
					check(t, m.Name, p.Attributes, allowed)
					histCount += p.Count
				}
			default:
				t.Errorf("%s: unexpected data %T", m.Name, m.Data)
			}
		}
	}
	want := map[string]map[string]int64{
		"pubcrypt.messages.sealed":         {"mode=body": 1, "mode=fields": 1},
		"pubcrypt.sealed.bytes":            {"mode=body": 100, "mode=fields": 50},
		"pubcrypt.messages.opened":         {"mode=plaintext": 1},
		"pubcrypt.opened.bytes":            {"mode=plaintext": 7},
		"pubcrypt.failures":                {"class=message,op=seal": 2, "class=environment,op=open": 1},
		"pubcrypt.vault.requests":          {"op=datakey,result=ok": 1, "op=decrypt,result=error": 1},
		"pubcrypt.datakeys.generated":      {"reason=max_age": 1},
		"pubcrypt.datakeys.cache.requests": {"result=hit": 1, "result=miss": 1},
		"pubcrypt.vault.logins":            {"result=ok": 1, "result=failed": 1},
		"pubcrypt.bridge.forwarded":        {"": 1},
		"pubcrypt.bridge.message_faults":   {"action=skip": 1},
	}
	for name, w := range want {
		for set, n := range w {
			if got := sums[name][set]; got != n {
				t.Errorf("%s{%s} = %d, want %d (all: %v)", name, set, got, n, sums[name])
			}
		}
	}
	if histCount != 2 {
		t.Errorf("pubcrypt.vault.request.duration counted %d requests, want 2", histCount)
	}
}

func check(t *testing.T, name string, s attribute.Set, allowed map[attribute.Key]bool) {
	t.Helper()
	for _, kv := range s.ToSlice() {
		if !allowed[kv.Key] {
			t.Errorf("%s: attribute %q outside the fixed sets", name, kv.Key)
		}
	}
}

// BenchmarkSealed: recording must not allocate per message.
func BenchmarkSealed(b *testing.B) {
	otel.SetMeterProvider(sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader())))
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		telemetry.Sealed(ctx, telemetry.Fields, 1024)
	}
}

// TestNoAllocation: recording costs no allocation per message (attribute sets and option
// slices are built once).
func TestNoAllocation(t *testing.T) {
	otel.SetMeterProvider(sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader())))
	ctx := context.Background()
	if n := testing.AllocsPerRun(100, func() {
		telemetry.Sealed(ctx, telemetry.Fields, 1024)
		telemetry.Opened(ctx, telemetry.Body, 1024)
		telemetry.Failed(ctx, telemetry.Open, fault.Environment, 1)
		telemetry.VaultRequest(ctx, telemetry.VaultDecrypt, telemetry.VaultOK, time.Millisecond)
		telemetry.CacheLookup(ctx, true)
		telemetry.VaultLogin(ctx, true)
		telemetry.Forwarded(ctx)
	}); n != 0 {
		t.Errorf("%v allocations per message, want 0", n)
	}
}
