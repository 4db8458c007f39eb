package appserver

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults for Config.
const (
	DefaultCommand          = "codex"
	DefaultStderrBufferSize = 64 << 10
	DefaultInterruptTimeout = 5 * time.Second
	DefaultClientName       = "bus-integration-codex"
	DefaultClientVersion    = "0.1.0"
)

// Config configures one app-server process.
type Config struct {
	// Command is the codex executable (name looked up in PATH, or a path).
	// Default "codex". The npm launcher and the native binary both work;
	// the native binary saves the Node launcher's memory.
	Command string
	// Overrides are config overrides passed as `-c key=value` (TOML values),
	// after the package's own defaults (see ShellSnapshot), so they win.
	Overrides []string
	// ShellSnapshot keeps Codex's shell snapshot feature on. By default it
	// is turned off (-c features.shell_snapshot=false): the snapshot runs a
	// login shell per thread, in its own session outside the process group
	// (so it can outlive Close), and costs CPU for nothing when commands are
	// declined anyway.
	ShellSnapshot bool
	// Dir is the process's working directory ("" = the caller's).
	Dir string
	// Env is the child's environment beyond what it inherits (e.g.
	// "CODEX_HOME=/path"). The child inherits only the variables named by
	// InheritEnv from the caller: never the caller's tokens, secrets, DSNs
	// or passwords.
	Env []string
	// InheritEnv names the caller's variables the child inherits
	// (DefaultInheritEnv when nil); a name ending in "*" is a prefix.
	InheritEnv []string
	// Logger receives debug logs (stderr lines, server requests by method
	// and id). Nil discards.
	Logger *slog.Logger
	// StderrBufferSize bounds the kept stderr tail; default 64 KiB.
	StderrBufferSize int
	// ClientName and ClientVersion are sent in initialize.clientInfo.
	ClientName    string
	ClientVersion string
	// Handler answers server requests not handled by a run's own Handler
	// (and those that belong to no run). Nil means Deny.
	Handler Handler
	// InterruptTimeout bounds how long a cancelled run waits for the
	// interrupted turn to end (and other cleanup calls). Default 5s.
	InterruptTimeout time.Duration
	// OnRateLimits, if set, receives every account/rateLimits/updated
	// notification (on the reader goroutine: return quickly).
	OnRateLimits func(RateLimits)
}

// DefaultInheritEnv is what the codex child inherits from its parent by
// default: where it runs (PATH, HOME, user, locale, time zone, temporary
// directory, terminal), its own home (CODEX_HOME), and how it reaches the
// network (CA certificates, proxies). Nothing else: the parent's
// BUS_API_TOKEN, JWT secrets, DSNs and passwords never reach Codex, nor
// the commands a model runs.
func DefaultInheritEnv() []string {
	return []string{
		"PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "LC_*", "TZ", "TMPDIR", "TERM",
		"CODEX_HOME", "SSL_CERT_FILE", "SSL_CERT_DIR",
		"HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "no_proxy", "all_proxy",
	}
}

// inheritedEnv keeps the entries of environ named by allow.
func inheritedEnv(environ, allow []string) []string {
	if allow == nil {
		allow = DefaultInheritEnv()
	}
	var out []string
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		for _, a := range allow {
			if name == a || (strings.HasSuffix(a, "*") && strings.HasPrefix(name, strings.TrimSuffix(a, "*"))) {
				out = append(out, kv)
				break
			}
		}
	}
	return out
}

func (c Config) withDefaults() Config {
	if c.Command == "" {
		c.Command = DefaultCommand
	}
	if c.StderrBufferSize <= 0 {
		c.StderrBufferSize = DefaultStderrBufferSize
	}
	if c.ClientName == "" {
		c.ClientName = DefaultClientName
	}
	if c.ClientVersion == "" {
		c.ClientVersion = DefaultClientVersion
	}
	if c.InterruptTimeout <= 0 {
		c.InterruptTimeout = DefaultInterruptTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Handler == nil {
		c.Handler = HandlerFunc(Deny)
	}
	return c
}

// InitializeResult is the app-server's answer to initialize.
type InitializeResult struct {
	UserAgent      string `json:"userAgent"`
	CodexHome      string `json:"codexHome"`
	PlatformFamily string `json:"platformFamily"`
	PlatformOS     string `json:"platformOs"`
}

// Process is one running `codex app-server`. It is safe for concurrent use:
// many runs (threads) can share one process.
type Process struct {
	cfg  Config
	log  *slog.Logger
	cmd  *exec.Cmd
	pid  int
	info InitializeResult

	stdin  *os.File
	stdout *os.File
	stderr *os.File
	errBuf *ringBuffer

	ctx    context.Context // cancelled when the process exits or is closed
	cancel context.CancelFunc
	outbox chan []byte
	nextID atomic.Int64

	dead     chan struct{} // closed once the process has exited
	exitErr  error         // set before dead is closed
	closing  atomic.Bool   // Close called: exit errors also match ErrClosed
	stopLife func() bool   // stops the lifetime-ctx watcher

	mu       sync.Mutex
	pending  map[int64]chan rpcMessage
	threads  map[string]*subscription
	draining bool
	runs     int
	idle     chan struct{} // closed when runs drops to 0 while draining

	wg        sync.WaitGroup // reader, stderr, writer, handler goroutines
	waitDone  chan struct{}  // closed when the waiter goroutine is done
	closeOnce sync.Once
}

// rpcMessage is any JSON-RPC message (no "jsonrpc" field on this wire).
type rpcMessage struct {
	ID     json.RawMessage `json:"id,omitempty"`
	Method string          `json:"method,omitempty"`
	Params json.RawMessage `json:"params,omitempty"`
	Result json.RawMessage `json:"result,omitempty"`
	Error  *RPCError       `json:"error,omitempty"`
}

// Start starts `<Command> app-server [-c key=value ...]` and performs the
// initialize/initialized handshake (with capabilities.experimentalApi).
// ctx bounds the start, and like exec.CommandContext also the process's
// life: when ctx is cancelled the process (and its process group) is
// killed. Call Close to stop it and release its resources.
//
// A missing command gives an error matching ErrNotInstalled.
func Start(ctx context.Context, cfg Config) (*Process, error) {
	return start(ctx, ctx, cfg)
}

// start starts a process living until life is cancelled; startCtx bounds
// only the startup handshake.
func start(life, startCtx context.Context, cfg Config) (*Process, error) {
	cfg = cfg.withDefaults()
	if err := life.Err(); err != nil {
		return nil, fmt.Errorf("appserver: start: %w", err)
	}
	if err := startCtx.Err(); err != nil {
		return nil, fmt.Errorf("appserver: start: %w", err)
	}
	path, err := exec.LookPath(cfg.Command)
	if err != nil {
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, fs.ErrNotExist) || errors.Is(err, fs.ErrPermission) {
			return nil, fmt.Errorf("%w: %q (install @openai/codex or set the codex command path): %w", ErrNotInstalled, cfg.Command, err)
		}
		return nil, fmt.Errorf("appserver: look up %q: %w", cfg.Command, err)
	}

	args := []string{"app-server"}
	if !cfg.ShellSnapshot {
		args = append(args, "-c", "features.shell_snapshot=false")
	}
	for _, o := range cfg.Overrides {
		args = append(args, "-c", o)
	}
	cmd := exec.Command(path, args...)
	cmd.Dir = cfg.Dir
	cmd.Env = append(inheritedEnv(os.Environ(), cfg.InheritEnv), cfg.Env...)
	setProcAttr(cmd)

	var files []*os.File
	closeAll := func() {
		for _, f := range files {
			_ = f.Close()
		}
	}
	pipe := func() (*os.File, *os.File, error) {
		r, w, err := os.Pipe()
		if err == nil {
			files = append(files, r, w)
		}
		return r, w, err
	}
	inR, inW, err := pipe()
	if err != nil {
		return nil, fmt.Errorf("appserver: pipe: %w", err)
	}
	outR, outW, err := pipe()
	if err != nil {
		closeAll()
		return nil, fmt.Errorf("appserver: pipe: %w", err)
	}
	errR, errW, err := pipe()
	if err != nil {
		closeAll()
		return nil, fmt.Errorf("appserver: pipe: %w", err)
	}
	// *os.File streams are handed to the child directly: no copying
	// goroutines, so Wait returns as soon as the direct child exits even if
	// a grandchild still holds a pipe.
	cmd.Stdin, cmd.Stdout, cmd.Stderr = inR, outW, errW
	if err := cmd.Start(); err != nil {
		closeAll()
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%w: %q: %w", ErrNotInstalled, cfg.Command, err)
		}
		return nil, fmt.Errorf("appserver: start %q: %w", cfg.Command, err)
	}
	_ = inR.Close()
	_ = outW.Close()
	_ = errW.Close()

	pctx, cancel := context.WithCancel(context.WithoutCancel(life))
	p := &Process{
		cfg:      cfg,
		log:      cfg.Logger.With("component", "codex-app-server", "pid", cmd.Process.Pid),
		cmd:      cmd,
		pid:      cmd.Process.Pid,
		stdin:    inW,
		stdout:   outR,
		stderr:   errR,
		errBuf:   newRingBuffer(cfg.StderrBufferSize),
		ctx:      pctx,
		cancel:   cancel,
		outbox:   make(chan []byte, 64),
		dead:     make(chan struct{}),
		pending:  make(map[int64]chan rpcMessage),
		threads:  make(map[string]*subscription),
		waitDone: make(chan struct{}),
	}
	readerDone := make(chan struct{})
	p.wg.Add(3)
	go p.readLoop(readerDone)
	go p.stderrLoop()
	go p.writeLoop()
	go p.waitLoop(readerDone)
	p.stopLife = context.AfterFunc(life, p.kill)
	p.log.Debug("codex app-server started", "command", path)

	if err := p.handshake(startCtx); err != nil {
		_ = p.Close()
		return nil, err
	}
	return p, nil
}

func (p *Process) handshake(ctx context.Context) error {
	params := map[string]any{
		"clientInfo":   map[string]any{"name": p.cfg.ClientName, "version": p.cfg.ClientVersion},
		"capabilities": map[string]any{"experimentalApi": true},
	}
	if err := p.Call(ctx, "initialize", params, &p.info); err != nil {
		return fmt.Errorf("appserver: initialize: %w", err)
	}
	if err := p.Notify(ctx, "initialized", nil); err != nil {
		return fmt.Errorf("appserver: initialized: %w", err)
	}
	return nil
}

// Info returns the initialize result (user agent, CODEX_HOME, platform).
func (p *Process) Info() InitializeResult { return p.info }

// PID returns the process id of the started command (the process group
// leader; with the npm launcher, the native binary is its child).
func (p *Process) PID() int { return p.pid }

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.dead }

// Alive reports whether the process is still running.
func (p *Process) Alive() bool {
	select {
	case <-p.dead:
		return false
	default:
		return true
	}
}

// Err returns why the process exited (matching ErrProcessExited), or nil
// while it runs.
func (p *Process) Err() error {
	select {
	case <-p.dead:
		return p.exitErr
	default:
		return nil
	}
}

// Stderr returns the kept tail of the process's stderr. It may contain
// sensitive data; do not forward it to untrusted callers.
func (p *Process) Stderr() string { return p.errBuf.String() }

// InFlight returns the number of runs currently in progress.
func (p *Process) InFlight() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.runs
}

// Close kills the process and its process group, fails in-flight calls
// (with errors matching ErrProcessExited and ErrClosed) and waits for the
// process and all goroutines to finish. Safe to call more than once.
func (p *Process) Close() error {
	p.closeOnce.Do(func() {
		p.closing.Store(true)
		p.mu.Lock()
		p.draining = true
		p.mu.Unlock()
		p.stopLife()
		p.kill()
	})
	<-p.waitDone
	p.wg.Wait()
	return nil
}

// Shutdown stops accepting runs, waits for in-flight runs to finish (or ctx
// to end), then closes the process. It returns ctx's error if the wait was
// cut short.
func (p *Process) Shutdown(ctx context.Context) error {
	p.mu.Lock()
	p.draining = true
	var idle chan struct{}
	if p.runs > 0 {
		if p.idle == nil {
			p.idle = make(chan struct{})
		}
		idle = p.idle
	}
	p.mu.Unlock()
	var err error
	if idle != nil {
		select {
		case <-idle:
		case <-p.dead:
		case <-ctx.Done():
			err = fmt.Errorf("appserver: shutdown: %w", ctx.Err())
		}
	}
	_ = p.Close()
	return err
}

func (p *Process) kill() { killGroup(p.cmd) }

// waitLoop reaps the process, kills what is left of its group, and fails
// everything in flight.
func (p *Process) waitLoop(readerDone <-chan struct{}) {
	defer close(p.waitDone)
	werr := p.cmd.Wait()
	// Grandchildren (the native binary under the npm launcher) share the
	// process group: take them down too.
	p.kill()
	// Give the reader a moment to drain what was written before exit, then
	// unblock it in case something outside the group still holds the pipe.
	t := time.NewTimer(time.Second)
	select {
	case <-readerDone:
	case <-t.C:
	}
	t.Stop()
	_ = p.stdout.Close()
	_ = p.stderr.Close()

	var err error
	switch {
	case p.closing.Load():
		err = fmt.Errorf("%w: %w", ErrProcessExited, ErrClosed)
	case werr != nil:
		err = fmt.Errorf("%w: %s (pid %d): %w", ErrProcessExited, p.cfg.Command, p.pid, werr)
	default:
		err = fmt.Errorf("%w: %s (pid %d) exited with status 0", ErrProcessExited, p.cfg.Command, p.pid)
	}
	p.exitErr = err
	if !p.closing.Load() {
		p.log.Warn("codex app-server exited", "err", werr)
		p.log.Debug("codex app-server stderr tail", "stderr", p.errBuf.String())
	}
	close(p.dead)
	p.cancel()
	_ = p.stdin.Close()
}

func (p *Process) readLoop(done chan<- struct{}) {
	defer p.wg.Done()
	defer close(done)
	r := bufio.NewReaderSize(p.stdout, 1<<20)
	for {
		line, err := r.ReadBytes('\n')
		if len(bytes.TrimSpace(line)) > 0 {
			p.dispatch(line)
		}
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, os.ErrClosed) {
				p.log.Debug("codex app-server stdout read", "err", err)
			}
			return
		}
	}
}

func (p *Process) stderrLoop() {
	defer p.wg.Done()
	r := bufio.NewReaderSize(p.stderr, 16<<10)
	for {
		line, err := r.ReadSlice('\n')
		if len(line) > 0 {
			_, _ = p.errBuf.Write(line)
			p.log.Debug("codex stderr", "line", string(bytes.TrimRight(line, "\r\n")))
		}
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return
		}
	}
}

func (p *Process) writeLoop() {
	defer p.wg.Done()
	for {
		select {
		case b := <-p.outbox:
			if _, err := p.stdin.Write(b); err != nil {
				p.log.Debug("codex app-server stdin write", "err", err)
			}
		case <-p.dead:
			return
		}
	}
}

// send queues one encoded message for the writer.
func (p *Process) send(ctx context.Context, msg any) error {
	b, err := json.Marshal(msg)
	if err != nil {
		return fmt.Errorf("appserver: encode: %w", err)
	}
	b = append(b, '\n')
	select {
	case <-p.dead:
		return p.exitErr
	default:
	}
	select {
	case p.outbox <- b:
		return nil
	case <-p.dead:
		return p.exitErr
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Call sends a JSON-RPC request and decodes its result into result (which
// may be nil). It is the escape hatch for methods this package does not
// wrap. A JSON-RPC error is returned as *RPCError; process death as
// ErrProcessExited.
func (p *Process) Call(ctx context.Context, method string, params, result any) error {
	id := p.nextID.Add(1)
	ch := make(chan rpcMessage, 1)
	p.mu.Lock()
	p.pending[id] = ch
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.pending, id)
		p.mu.Unlock()
	}()
	msg := struct {
		ID     int64  `json:"id"`
		Method string `json:"method"`
		Params any    `json:"params,omitempty"`
	}{id, method, params}
	if err := p.send(ctx, msg); err != nil {
		return fmt.Errorf("appserver: %s: %w", method, err)
	}
	select {
	case resp := <-ch:
		if resp.Error != nil {
			return fmt.Errorf("appserver: %s: %w", method, resp.Error)
		}
		if result != nil && len(resp.Result) > 0 {
			if err := json.Unmarshal(resp.Result, result); err != nil {
				return fmt.Errorf("appserver: %s: decode result: %w", method, err)
			}
		}
		return nil
	case <-p.dead:
		return fmt.Errorf("appserver: %s: %w", method, p.exitErr)
	case <-ctx.Done():
		return fmt.Errorf("appserver: %s: %w", method, ctx.Err())
	}
}

// Notify sends a JSON-RPC notification.
func (p *Process) Notify(ctx context.Context, method string, params any) error {
	msg := struct {
		Method string `json:"method"`
		Params any    `json:"params,omitempty"`
	}{method, params}
	if err := p.send(ctx, msg); err != nil {
		return fmt.Errorf("appserver: %s: %w", method, err)
	}
	return nil
}

// dispatch routes one message read from stdout. It never blocks on a
// consumer.
func (p *Process) dispatch(line []byte) {
	var msg rpcMessage
	if err := json.Unmarshal(line, &msg); err != nil {
		p.log.Debug("codex app-server: undecodable message", "err", err, "bytes", len(line))
		return
	}
	hasID := len(msg.ID) > 0 && string(msg.ID) != "null"
	switch {
	case msg.Method != "" && hasID:
		p.serverRequest(msg)
	case msg.Method != "":
		p.notification(msg)
	case hasID:
		id, err := strconv.ParseInt(string(msg.ID), 10, 64)
		if err != nil {
			return
		}
		p.mu.Lock()
		ch := p.pending[id]
		delete(p.pending, id)
		p.mu.Unlock()
		if ch != nil {
			ch <- msg // buffered 1, single delivery
		}
	}
}

func (p *Process) notification(msg rpcMessage) {
	var refs requestRefs
	_ = json.Unmarshal(msg.Params, &refs)
	tid := refs.thread()
	if tid == "" {
		if msg.Method == "account/rateLimits/updated" && p.cfg.OnRateLimits != nil {
			var n struct {
				RateLimits RateLimits `json:"rateLimits"`
			}
			if json.Unmarshal(msg.Params, &n) == nil {
				p.cfg.OnRateLimits(n.RateLimits)
			}
		}
		return
	}
	p.mu.Lock()
	sub := p.threads[tid]
	p.mu.Unlock()
	if sub != nil {
		sub.push(msg)
	}
}

func (p *Process) serverRequest(msg rpcMessage) {
	var refs requestRefs
	_ = json.Unmarshal(msg.Params, &refs)
	req := &ServerRequest{
		ID: msg.ID, Method: msg.Method, Params: msg.Params,
		ThreadID: refs.thread(), TurnID: refs.TurnID, ItemID: refs.item(),
	}
	p.log.Debug("codex server request", "method", req.Method, "id", string(req.ID),
		"thread_id", req.ThreadID, "turn_id", req.TurnID, "item_id", req.ItemID)

	h, ctx := p.cfg.Handler, p.ctx
	var subWG *sync.WaitGroup
	p.mu.Lock()
	if sub := p.threads[req.ThreadID]; req.ThreadID != "" && sub != nil && sub.hold && req.Method == MethodDynamicToolCall {
		p.mu.Unlock()
		sub.push(msg) // for the turn's reader to answer
		return
	}
	if sub := p.threads[req.ThreadID]; req.ThreadID != "" && sub != nil {
		if sub.handler != nil {
			h = sub.handler
		}
		ctx = sub.ctx
		subWG = &sub.wg
		subWG.Add(1)
	}
	p.wg.Add(1) // the reader's own count keeps the counter > 0 here
	p.mu.Unlock()
	go func() {
		defer p.wg.Done()
		if subWG != nil {
			defer subWG.Done()
		}
		p.answer(ctx, h, req)
	}()
}

// answer runs h and always sends a response.
func (p *Process) answer(ctx context.Context, h Handler, req *ServerRequest) {
	result, err := callHandler(ctx, h, req)
	var rpcErr *RPCError
	if err != nil && !errors.As(err, &rpcErr) {
		rpcErr = &RPCError{Code: CodeInternalError, Message: err.Error()}
	}
	if rpcErr != nil {
		p.log.Debug("codex server request answered with error", "method", req.Method, "id", string(req.ID), "code", rpcErr.Code)
	} else {
		p.log.Debug("codex server request answered", "method", req.Method, "id", string(req.ID))
	}
	// Answer even if the run's ctx is gone: the turn waits on it.
	sctx, cancel := context.WithTimeout(p.ctx, p.cfg.InterruptTimeout)
	defer cancel()
	if err := p.respond(sctx, req.ID, result, rpcErr); err != nil {
		p.log.Debug("codex server request: answer not sent", "method", req.Method, "id", string(req.ID), "err", err)
	}
}

// respond sends the answer to server request id: result, or rpcErr when
// set.
func (p *Process) respond(ctx context.Context, id json.RawMessage, result any, rpcErr *RPCError) error {
	resp := struct {
		ID     json.RawMessage `json:"id"`
		Result any             `json:"result,omitempty"`
		Error  *RPCError       `json:"error,omitempty"`
	}{ID: id, Error: rpcErr}
	if rpcErr == nil {
		if result == nil {
			result = struct{}{}
		}
		resp.Result = result
	}
	return p.send(ctx, resp)
}

func callHandler(ctx context.Context, h Handler, req *ServerRequest) (result any, err error) {
	defer func() {
		if r := recover(); r != nil {
			result, err = nil, &RPCError{Code: CodeInternalError, Message: fmt.Sprintf("handler panic: %v", r)}
		}
	}()
	return h.HandleServerRequest(ctx, req)
}

// beginRun registers a run; it fails once the process is draining or dead.
func (p *Process) beginRun() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.draining {
		return fmt.Errorf("appserver: run: %w", ErrClosed)
	}
	select {
	case <-p.dead:
		return fmt.Errorf("appserver: run: %w", p.exitErr)
	default:
	}
	p.runs++
	return nil
}

func (p *Process) endRun() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.runs--
	if p.runs == 0 && p.idle != nil {
		close(p.idle)
		p.idle = nil
	}
}
