// Package netfault puts a TCP proxy on loopback between a client and a real server, so a
// test can make the network fail the way production networks fail: a connection reset
// (Cut), a slow link (Delay), a server that accepts and never answers (Silent). The
// server on the other side stays real; only the wire between is made to misbehave.
//
// Modes can be switched at any moment, also while connections are open. Silent has pause
// semantics, like a server whose process is stopped: bytes already sent wait, and are
// delivered in order once the proxy passes again, so a stream is never corrupted. Cut
// resets every connection (the peer sees ECONNRESET or EOF) and resets new ones as soon
// as they are accepted; the proxy keeps its port, so Pass afterwards needs no new
// address and nothing else can take the port in between.
package netfault

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Mode is what the proxy does with traffic.
type Mode int

const (
	// ModePass forwards traffic both ways.
	ModePass Mode = iota
	// ModeCut resets every open connection and every new one.
	ModeCut
	// ModeDelay forwards traffic, each direction held back by the proxy's delay.
	ModeDelay
	// ModeSilent accepts connections and neither forwards nor answers; held bytes flow
	// on when the mode changes to pass or delay.
	ModeSilent
)

func (m Mode) String() string {
	switch m {
	case ModePass:
		return "pass"
	case ModeCut:
		return "cut"
	case ModeDelay:
		return "delay"
	case ModeSilent:
		return "silent"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

const (
	dialTimeout = 5 * time.Second
	chunkSize   = 32 << 10
	// chunksAhead bounds what a direction reads ahead of what it has written, so that a
	// delayed or silent direction pushes back on its sender instead of buffering without end.
	chunksAhead = 64
)

// Proxy forwards TCP connections from its own loopback address to a target.
type Proxy struct {
	ln       net.Listener
	accepted atomic.Int64

	mu      sync.Mutex
	mode    Mode
	delay   time.Duration
	target  string
	changed chan struct{} // closed and replaced on every change of mode
	conns   map[*link]struct{}
	closed  bool

	wg sync.WaitGroup
}

// Listen starts a proxy on a free port of 127.0.0.1 that forwards to target (host:port),
// in Pass mode.
func Listen(target string) (*Proxy, error) {
	return listen("127.0.0.1:0", target, ModePass)
}

// ListenAt is Listen on a given address, for a proxy that must keep a known port.
func ListenAt(addr, target string) (*Proxy, error) {
	return listen(addr, target, ModePass)
}

// Silent starts a listener on a free port of 127.0.0.1 that accepts connections and
// never answers: a server that hangs. It is a Proxy in Silent mode with no target; give
// it one with SetTarget and it can come to life with Pass.
func Silent() (*Proxy, error) {
	return listen("127.0.0.1:0", "", ModeSilent)
}

func listen(addr, target string, mode Mode) (*Proxy, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("netfault: listen on %s: %w", addr, err)
	}
	p := &Proxy{
		ln:      ln,
		mode:    mode,
		target:  target,
		changed: make(chan struct{}),
		conns:   make(map[*link]struct{}),
	}
	p.wg.Add(1)
	go p.serve()
	return p, nil
}

// Addr is the proxy's address, 127.0.0.1:PORT: give it to the client instead of the target's.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Listener returns the proxy's listener (its Addr is the proxy's address).
func (p *Proxy) Listener() net.Listener { return p.ln }

// Accepted is the number of connections the proxy has accepted since it started, in any mode.
func (p *Proxy) Accepted() int { return int(p.accepted.Load()) }

// Open is the number of connections open through the proxy now.
func (p *Proxy) Open() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

// Mode returns the current mode and, in Delay mode, the delay.
func (p *Proxy) Mode() (Mode, time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.mode, p.delay
}

// SetTarget changes where new connections are forwarded; open ones keep their target.
func (p *Proxy) SetTarget(target string) {
	p.mu.Lock()
	p.target = target
	p.mu.Unlock()
}

// Pass forwards traffic again; bytes held by Silent flow on.
func (p *Proxy) Pass() { p.set(ModePass, 0) }

// Delay forwards traffic, holding back each chunk by d in each direction, so a
// request-response exchange takes at least 2·d longer. Throughput is not limited.
func (p *Proxy) Delay(d time.Duration) { p.set(ModeDelay, d) }

// Silent stops forwarding without closing anything: open connections hang, new ones are
// accepted and hang too.
func (p *Proxy) Silent() { p.set(ModeSilent, 0) }

// Cut resets every open connection now and every new one as soon as it is accepted.
func (p *Proxy) Cut() {
	p.set(ModeCut, 0)
	p.mu.Lock()
	ls := make([]*link, 0, len(p.conns))
	for l := range p.conns {
		ls = append(ls, l)
	}
	p.mu.Unlock()
	for _, l := range ls {
		l.reset()
	}
}

func (p *Proxy) set(m Mode, d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.mode, p.delay = m, d
	close(p.changed)
	p.changed = make(chan struct{})
}

// state returns the mode, the delay and a channel closed at the next change.
func (p *Proxy) state() (Mode, time.Duration, <-chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.mode, p.delay, p.changed
}

// Close stops the proxy and closes every connection through it.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	ls := make([]*link, 0, len(p.conns))
	for l := range p.conns {
		ls = append(ls, l)
	}
	p.mu.Unlock()
	err := p.ln.Close()
	for _, l := range ls {
		l.close()
	}
	p.set(ModeCut, 0) // wakes every goroutine waiting on a mode change
	p.wg.Wait()
	return err
}

func (p *Proxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(10 * time.Millisecond) // e.g. out of file descriptors: try again
			continue
		}
		p.accepted.Add(1)
		l := &link{p: p, client: c}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			resetConn(c)
			return
		}
		p.conns[l] = struct{}{}
		p.wg.Add(1)
		p.mu.Unlock()
		go l.run()
	}
}

// link is one client connection and, once dialled, its connection to the target.
type link struct {
	p      *Proxy
	client net.Conn

	mu     sync.Mutex
	server net.Conn
	done   bool
}

func (l *link) run() {
	defer l.p.wg.Done()
	defer l.forget()
	// Dial only once traffic may flow: a connection accepted while Silent waits like one
	// in a hung server's backlog, and one accepted while Cut is reset.
	for {
		mode, _, changed := l.p.state()
		if mode == ModeCut {
			l.reset()
			return
		}
		if mode != ModeSilent {
			break
		}
		<-changed
	}
	l.p.mu.Lock()
	target := l.p.target
	l.p.mu.Unlock()
	if target == "" {
		l.reset()
		return
	}
	server, err := net.DialTimeout("tcp", target, dialTimeout)
	if err != nil {
		l.reset() // the target is down: the client sees its connection reset
		return
	}
	l.mu.Lock()
	if l.done {
		l.mu.Unlock()
		server.Close()
		return
	}
	l.server = server
	l.mu.Unlock()

	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); l.pump(server, l.client) }()
	go func() { defer wg.Done(); l.pump(l.client, server) }()
	wg.Wait()
	l.close()
}

func (l *link) forget() {
	l.p.mu.Lock()
	delete(l.p.conns, l)
	l.p.mu.Unlock()
}

type chunk struct {
	b   []byte
	due time.Time
}

// pump copies src to dst, holding each chunk until its due time and while the proxy is
// silent. A reader and a writer goroutine are joined by a bounded channel, so a delay
// adds latency without lowering throughput.
func (l *link) pump(dst, src net.Conn) {
	ch := make(chan chunk, chunksAhead)
	var readErr error // written by the reader before it closes ch
	go func() {
		defer close(ch)
		for {
			b := make([]byte, chunkSize)
			n, err := src.Read(b)
			if n > 0 {
				_, d, _ := l.p.state()
				ch <- chunk{b: b[:n], due: time.Now().Add(d)}
			}
			if err != nil {
				readErr = err
				return
			}
		}
	}()
	drained := true
	for c := range ch {
		if !l.hold(c.due) {
			drained = false
			break
		}
		if _, err := dst.Write(c.b); err != nil {
			drained = false
			break
		}
	}
	if drained && errors.Is(readErr, io.EOF) {
		// src closed its side in order: pass the half-close on, so that protocols which
		// read to EOF still end, and let the other direction finish.
		if tc, ok := dst.(*net.TCPConn); ok {
			tc.CloseWrite()
			return
		}
	}
	// Cut, closed, or a failed read or write: end both directions.
	l.close()
	for range ch { // closing the conns ends the reader's Read; let it finish
	}
}

// hold waits until due, and for as long as the proxy is silent. It reports false if the
// link is cut or closed meanwhile.
func (l *link) hold(due time.Time) bool {
	for {
		mode, _, changed := l.p.state()
		switch mode {
		case ModeCut:
			return false
		case ModeSilent:
			<-changed
			continue
		}
		wait := time.Until(due)
		if wait <= 0 {
			return !l.isDone()
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-changed:
			t.Stop()
		}
	}
}

func (l *link) isDone() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.done
}

// reset closes the client side with a TCP RST (SO_LINGER 0): a cut looks like a crashed
// peer or a middlebox dropping state, not like an orderly close.
func (l *link) reset() {
	l.mu.Lock()
	l.done = true
	server := l.server
	l.mu.Unlock()
	resetConn(l.client)
	if server != nil {
		resetConn(server)
	}
}

func (l *link) close() {
	l.mu.Lock()
	l.done = true
	server := l.server
	l.mu.Unlock()
	l.client.Close()
	if server != nil {
		server.Close()
	}
}

func resetConn(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	c.Close()
}
