package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/pubcrypt/pubcrypt/fault"
	"github.com/pubcrypt/pubcrypt/internal/broker"
	"github.com/pubcrypt/pubcrypt/internal/telemetry"
	"github.com/pubcrypt/pubcrypt/keyring"
)

// obsFlags are the observability flags of the long-running commands: logs, and the
// metrics and health endpoints.
type obsFlags struct {
	listen    string
	logFormat string
	quiet     bool
}

func (o *obsFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&o.listen, "listen", "", "serve /metrics (Prometheus), /healthz (alive) and /readyz (Vault and the broker answering) on this address, e.g. 127.0.0.1:9464 (empty: none)")
	fs.StringVar(&o.logFormat, "log-format", "text", "log format on stderr: text or json")
	fs.BoolVar(&o.quiet, "quiet", false, "log errors only (no warnings such as outages and skipped messages)")
}

// setLogger makes the process's logger write format (--log-format: text or json) on
// stderr, from level up.
func setLogger(format string, level slog.Level) error {
	hopts := &slog.HandlerOptions{Level: level}
	switch format {
	case "text":
		slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, hopts)))
	case "json":
		slog.SetDefault(slog.New(slog.NewJSONHandler(os.Stderr, hopts)))
	default:
		return usagef("--log-format must be text or json, not %q", format)
	}
	return nil
}

// start sets the process's logger from --log-format and --quiet and, with --listen, serves
// the metrics and health endpoints until close. The command tells the observer when it
// has started (ready) and, through its outage, when Vault or the broker fails.
func (o *obsFlags) start(name string) (*observer, error) {
	level := slog.LevelWarn
	if o.quiet {
		level = slog.LevelError
	}
	if err := setLogger(o.logFormat, level); err != nil {
		return nil, err
	}
	obs := &observer{health: &health{state: "starting: checking Vault and the broker"}}
	if o.listen == "" {
		return obs, nil
	}
	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		return nil, fault.Mark(fmt.Errorf("--listen: %w", err), fault.Environment)
	}
	handler, err := metricsHandler()
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("--listen: metrics: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", handler)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("GET /readyz", obs.health.serve)
	obs.addr = ln.Addr().String()
	obs.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = obs.srv.Serve(ln) }()
	if !o.quiet {
		// Logged whatever the level: the operator needs the address (with port 0, the one
		// the system chose).
		r := slog.NewRecord(time.Now(), slog.LevelInfo, "serving /metrics, /healthz and /readyz", 0)
		r.AddAttrs(slog.String("command", name), slog.String("addr", obs.addr))
		_ = slog.Default().Handler().Handle(context.Background(), r)
	}
	return obs, nil
}

// metricsHandler installs a MeterProvider exporting to Prometheus as the global one, so
// that the library's instruments (internal/telemetry) are served, with the Go runtime's
// and the process's. gocloud's own instruments are dropped: their latency histogram is
// in milliseconds, which Prometheus' conventions (and promtool) refuse.
func metricsHandler() (http.Handler, error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	exp, err := otelprom.New(otelprom.WithRegisterer(reg), otelprom.WithoutTargetInfo())
	if err != nil {
		return nil, err
	}
	onlyOurs := func(i sdkmetric.Instrument) (sdkmetric.Stream, bool) {
		if i.Scope.Name == telemetry.ScopeName {
			return sdkmetric.Stream{}, false
		}
		return sdkmetric.Stream{Name: i.Name, Aggregation: sdkmetric.AggregationDrop{}}, true
	}
	otel.SetMeterProvider(sdkmetric.NewMeterProvider(sdkmetric.WithReader(exp), sdkmetric.WithView(onlyOurs)))
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{}), nil
}

// observer is what start set up: the health the endpoints report and their server.
type observer struct {
	health *health
	addr   string       // where the endpoints are served ("" without --listen)
	srv    *http.Server // nil without --listen
}

// started says the command has checked Vault and the broker and is at work: ready.
func (o *observer) started() { o.health.ok() }

// close stops serving; /readyz answers "stopping" until then.
func (o *observer) close() {
	o.health.set("stopping")
	if o.srv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	_ = o.srv.Shutdown(ctx)
}

// health is the readiness of a long-running command: ready once it has started, not
// ready while an outage of Vault or the broker lasts (the outage reports it), with a
// short reason that names no message, key, token or URL.
type health struct {
	mu    sync.Mutex
	state string // "" when ready
	since time.Time
}

func (h *health) ok() { h.set("") }

func (h *health) set(state string) {
	if h == nil {
		return
	}
	h.mu.Lock()
	h.state, h.since = state, time.Now()
	h.mu.Unlock()
}

// failing records that an outage began with err.
func (h *health) failing(err error) { h.set("outage: " + outageReason(err)) }

func (h *health) serve(w http.ResponseWriter, _ *http.Request) {
	h.mu.Lock()
	state, since := h.state, h.since
	h.mu.Unlock()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if state == "" {
		fmt.Fprintln(w, "ready")
		return
	}
	w.WriteHeader(http.StatusServiceUnavailable)
	fmt.Fprintf(w, "%s (for %v)\n", state, time.Since(since).Round(time.Second))
}

// outageReason names what failed from fixed texts only: the error's own text may carry a
// message ID or a URL.
func outageReason(err error) string {
	var ke *keyring.Error
	var se *subscriptionError
	switch {
	case errors.As(err, &ke) && ke.Kind != nil:
		return ke.Kind.Error() // "key service unavailable", "permission denied by key service", ...
	case errors.As(err, &ke):
		return "key service failing"
	case errors.As(err, &se):
		return "broker: receive failing"
	case errors.Is(err, broker.ErrTopicNotFound):
		return "broker: topic not found"
	case errors.Is(err, context.DeadlineExceeded):
		return "Vault or the broker not answering in time"
	}
	return "broker or destination failing"
}

// Metric recording for the bridge (encrypt) through its callbacks.
func countForwarded() { telemetry.Forwarded(context.Background()) }

func countBridgeFault(verb string) {
	a := telemetry.BridgeSkipped
	if verb == "dead-lettered" {
		a = telemetry.BridgeDeadLettered
	}
	telemetry.BridgeMessageFault(context.Background(), a)
}
