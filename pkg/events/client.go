package events

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// APIError is an error answer of the Events API.
type APIError struct {
	// Status is the HTTP status code.
	Status int
	// Code is the API's error code, such as "invalid_auth" or "forbidden".
	Code string
	// Message is the API's human-readable message.
	Message string
}

func (e *APIError) Error() string {
	msg := e.Message
	if msg == "" {
		msg = http.StatusText(e.Status)
	}
	if e.Code != "" {
		return fmt.Sprintf("events api: %d %s: %s", e.Status, e.Code, msg)
	}
	return fmt.Sprintf("events api: %d: %s", e.Status, msg)
}

// Permanent reports whether retrying the same call cannot help (a 4xx other
// than 408 and 429).
func (e *APIError) Permanent() bool {
	return e.Status >= 400 && e.Status < 500 && e.Status != http.StatusRequestTimeout && e.Status != http.StatusTooManyRequests
}

// ErrUnreachable wraps the last connection error when a listener could not
// connect within its ConnectTimeout.
var ErrUnreachable = errors.New("events api unreachable")

// RetryPolicy controls how listeners reconnect.
type RetryPolicy struct {
	// Enabled turns reconnection on.
	Enabled bool
	// Min is the first back-off delay; it doubles up to Max.
	Min time.Duration
	// Max caps the back-off delay.
	Max time.Duration
}

// DefaultRetry is BusDK's default: retry, from 250ms up to 5s.
func DefaultRetry() RetryPolicy {
	return RetryPolicy{Enabled: true, Min: 250 * time.Millisecond, Max: 5 * time.Second}
}

// RetryFromEnv reads BUS_EVENTS_LISTENER_RETRY (bool),
// BUS_EVENTS_LISTENER_RETRY_MIN and BUS_EVENTS_LISTENER_RETRY_MAX
// (durations) over DefaultRetry.
func RetryFromEnv(lookup func(string) (string, bool)) (RetryPolicy, error) {
	p := DefaultRetry()
	if v, ok := lookup("BUS_EVENTS_LISTENER_RETRY"); ok && v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return p, fmt.Errorf("BUS_EVENTS_LISTENER_RETRY=%q: want true or false", v)
		}
		p.Enabled = b
	}
	for _, item := range []struct {
		key string
		dst *time.Duration
	}{{"BUS_EVENTS_LISTENER_RETRY_MIN", &p.Min}, {"BUS_EVENTS_LISTENER_RETRY_MAX", &p.Max}} {
		if v, ok := lookup(item.key); ok && v != "" {
			d, err := time.ParseDuration(v)
			if err != nil || d <= 0 {
				return p, fmt.Errorf("%s=%q: want a positive duration such as 250ms", item.key, v)
			}
			*item.dst = d
		}
	}
	if p.Max < p.Min {
		return p, fmt.Errorf("BUS_EVENTS_LISTENER_RETRY_MAX (%s) is below BUS_EVENTS_LISTENER_RETRY_MIN (%s)", p.Max, p.Min)
	}
	return p, nil
}

// Client talks to one Events API.
type Client struct {
	base  *url.URL
	token TokenSource
	http  *http.Client
	retry RetryPolicy
	log   *slog.Logger
}

// Option configures a Client.
type Option func(*Client)

// WithToken sets a fixed bearer token.
func WithToken(token string) Option {
	return func(c *Client) { c.token = func() (string, error) { return token, nil } }
}

// TokenSource returns the bearer token for the next call. It is called for
// every request and every (re)connection, so it can hand out a renewed or
// rotated token; it must be safe for concurrent use and fast (cache).
type TokenSource func() (string, error)

// WithTokenSource sets where the bearer token comes from.
func WithTokenSource(ts TokenSource) Option { return func(c *Client) { c.token = ts } }

// WithHTTPClient replaces the HTTP client. It must not have a Timeout, or
// streams end after it.
func WithHTTPClient(h *http.Client) Option { return func(c *Client) { c.http = h } }

// WithRetry sets the listener reconnection policy (DefaultRetry otherwise).
func WithRetry(p RetryPolicy) Option { return func(c *Client) { c.retry = p } }

// WithLogger sets the logger for reconnection messages.
func WithLogger(l *slog.Logger) Option { return func(c *Client) { c.log = l } }

// NewClient returns a client for the Events API at baseURL
// (e.g. http://127.0.0.1:8081).
func NewClient(baseURL string, opts ...Option) (*Client, error) {
	u, err := url.Parse(strings.TrimRight(baseURL, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("events: invalid Events API URL %q: want http(s)://host:port", baseURL)
	}
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns = 256
	t.MaxIdleConnsPerHost = 256
	c := &Client{base: u, http: &http.Client{Transport: t}, retry: DefaultRetry(), log: slog.Default()}
	for _, o := range opts {
		o(c)
	}
	return c, nil
}

// BaseURL returns the API's base URL.
func (c *Client) BaseURL() string { return c.base.String() }

func (c *Client) newRequest(ctx context.Context, method, path string, query url.Values, body []byte) (*http.Request, error) {
	u := *c.base
	u.Path = strings.TrimRight(u.Path, "/") + path
	u.RawQuery = query.Encode()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), rd)
	if err != nil {
		return nil, fmt.Errorf("events: build request: %w", err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != nil {
		tok, err := c.token()
		if err != nil {
			return nil, fmt.Errorf("events: bearer token: %w", err)
		}
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
	}
	return req, nil
}

// readAPIError turns a non-2xx answer into an *APIError.
func readAPIError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	e := &APIError{Status: resp.StatusCode}
	var body struct {
		Error   json.RawMessage `json:"error"`
		Message string          `json:"message"`
	}
	if json.Unmarshal(b, &body) == nil {
		e.Message = body.Message
		var code string
		var nested struct{ Code, Message string }
		switch {
		case json.Unmarshal(body.Error, &code) == nil:
			e.Code = code
		case json.Unmarshal(body.Error, &nested) == nil:
			e.Code = nested.Code
			if e.Message == "" {
				e.Message = nested.Message
			}
		}
	} else {
		e.Message = strings.TrimSpace(string(b))
	}
	return e
}

func (c *Client) do(ctx context.Context, path string, in, out any) error {
	body, err := json.Marshal(in)
	if err != nil {
		return fmt.Errorf("events: encode: %w", err)
	}
	req, err := c.newRequest(ctx, http.MethodPost, path, nil, body)
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("events: POST %s: %w", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return readAPIError(resp)
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("events: decode %s answer: %w", path, err)
	}
	return nil
}

// Publish publishes ev.
func (c *Client) Publish(ctx context.Context, ev Event) (Accepted, error) {
	if len(ev.Payload) == 0 {
		ev.Payload = json.RawMessage("null")
	}
	var acc Accepted
	err := c.do(ctx, "/api/v1/events", ev, &acc)
	return acc, err
}

// PublishJSON publishes an event whose payload is v encoded as JSON.
func (c *Client) PublishJSON(ctx context.Context, name, correlationID string, v any) (Accepted, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return Accepted{}, fmt.Errorf("events: encode payload: %w", err)
	}
	return c.Publish(ctx, Event{Name: name, CorrelationID: correlationID, Payload: b})
}

// Ack acknowledges unicast deliveries of group on name that consumer holds
// (the acknowledgement extension): the consumer named when the stream was
// opened. Deliveries another consumer holds, unknown and already
// acknowledged ids are ignored. It returns how many were newly
// acknowledged.
func (c *Client) Ack(ctx context.Context, name, group, consumer string, ids ...string) (int, error) {
	var out struct {
		Acknowledged int `json:"acknowledged"`
	}
	err := c.do(ctx, "/api/v1/events/ack", map[string]any{"name": name, "group": group, "consumer": consumer, "ids": ids}, &out)
	return out.Acknowledged, err
}

// Release gives unicast deliveries of group on name that consumer holds
// back to the group at once (the acknowledgement extension): a consumer
// that received deliveries it will not handle — it is stopping — releases
// them instead of holding them until their visibility timeout. A released
// delivery does not count: its next delivery carries the same Deliveries.
// Deliveries another consumer holds, unknown and already settled ids are
// ignored. It returns how many were released.
func (c *Client) Release(ctx context.Context, name, group, consumer string, ids ...string) (int, error) {
	var out struct {
		Released int `json:"released"`
	}
	err := c.do(ctx, "/api/v1/events/release", map[string]any{"name": name, "group": group, "consumer": consumer, "ids": ids}, &out)
	return out.Released, err
}

// StreamIDHeader is the header of a stream's answer that carries its id,
// for EndStream.
const StreamIDHeader = "Bus-Stream-Id"

// EndStream asks the Events API to end the stream with id (Stream.ID)
// gracefully: it takes no more events and its answer ends once what it
// already wrote is sent, so the reader sees every event up to io.EOF. It
// reports whether an open stream of this client's identity had that id.
func (c *Client) EndStream(ctx context.Context, id string) (bool, error) {
	var out struct {
		Ended bool `json:"ended"`
	}
	err := c.do(ctx, "/api/v1/events/stream/end", map[string]string{"stream": id}, &out)
	return out.Ended, err
}

// ListenOptions describe a stream.
type ListenOptions struct {
	// Names to listen to (one or more).
	Names []string
	// Delivery is Broadcast (default) or Unicast.
	Delivery Delivery
	// Group and Consumer name a unicast consumer.
	Group, Consumer string
	// Replay includes retained history first.
	Replay bool
	// NoFollow ends the stream after the replayed snapshot (follow=false).
	NoFollow bool
	// Ack asks for acknowledged unicast delivery; call Client.Ack for every
	// event handled, or it is redelivered after Visibility (Client.Release
	// gives an event back at once). When ctx ends, Listen ends such a
	// stream gracefully (EndStream) and releases the events that arrive
	// until its end instead of handing them to the handler.
	Ack bool
	// Visibility is the acknowledgement deadline (server default when 0).
	Visibility time.Duration
	// Prefetch caps unacknowledged deliveries on the stream (needs Ack).
	Prefetch int
	// ConnectTimeout bounds how long Listen retries before its first
	// successful connection (0: as long as the retry policy allows). After
	// the first connection Listen reconnects for as long as ctx lives.
	ConnectTimeout time.Duration
	// IdleTimeout is how long a stream may stay silent (no event and no
	// keep-alive line) before it is presumed dead and closed: Next then
	// returns an error wrapping ErrStreamIdle, and Listen reconnects.
	// DefaultIdleTimeout when 0; negative disables it. It must exceed the
	// server's keep-alive interval (15 s on the Events API).
	IdleTimeout time.Duration
	// OnConnect is called after each successful (re)connection.
	OnConnect func()
	// OnDisconnect is called when an established stream breaks, including
	// when it stays silent for longer than IdleTimeout; the listener is
	// not connected again until the next OnConnect.
	OnDisconnect func(error)
}

// DefaultIdleTimeout is three keep-alive intervals of the Events API: a
// stream silent for this long has lost its connection without noticing.
const DefaultIdleTimeout = 45 * time.Second

// ErrStreamIdle is wrapped by the error of a stream that stayed silent for
// longer than its IdleTimeout.
var ErrStreamIdle = errors.New("events: stream silent for longer than its idle timeout")

func (o ListenOptions) idleTimeout() time.Duration {
	if o.IdleTimeout == 0 {
		return DefaultIdleTimeout
	}
	return max(o.IdleTimeout, 0)
}

func (o ListenOptions) query() url.Values {
	q := url.Values{}
	for _, n := range o.Names {
		q.Add("name", n)
	}
	if o.Delivery != "" {
		q.Set("delivery", string(o.Delivery))
	}
	if o.Group != "" {
		q.Set("group", o.Group)
	}
	if o.Consumer != "" {
		q.Set("consumer", o.Consumer)
	}
	if o.Replay {
		q.Set("replay", "true")
	}
	if o.NoFollow {
		q.Set("follow", "false")
	}
	if o.Ack {
		q.Set("ack", "true")
	}
	if o.Visibility > 0 {
		q.Set("visibility", o.Visibility.String())
	}
	if o.Prefetch > 0 {
		q.Set("prefetch", strconv.Itoa(o.Prefetch))
	}
	return q
}

// Stream is one open NDJSON event stream.
type Stream struct {
	body io.ReadCloser
	r    *bufio.Reader
	id   string // the server's id of the stream, for EndStream ("" if none)

	cancel   context.CancelFunc // ends the request
	idle     time.Duration      // 0: no watchdog
	watchdog *time.Timer        // ends the request after idle without data
	silent   atomic.Bool        // the watchdog fired

	mu       sync.Mutex
	deadline *time.Timer // closeWithin's timer
}

// maxLine bounds one NDJSON line.
const maxLine = 64 << 20

// Open opens one stream without reconnection. Errors the API answers with
// are *APIError.
//
// The stream is closed when it stays silent for longer than o.IdleTimeout,
// the wait for the answer's headers included.
func (c *Client) Open(ctx context.Context, o ListenOptions) (*Stream, error) {
	ctx, cancel := context.WithCancel(ctx)
	s := &Stream{cancel: cancel, idle: o.idleTimeout()}
	if s.idle > 0 {
		s.watchdog = time.AfterFunc(s.idle, func() {
			s.silent.Store(true)
			cancel()
		})
	}
	req, err := c.newRequest(ctx, http.MethodGet, "/api/v1/events/stream", o.query(), nil)
	if err != nil {
		s.stop()
		return nil, err
	}
	req.Header.Set("Accept", "application/x-ndjson")
	resp, err := c.http.Do(req)
	if err != nil {
		s.stop()
		return nil, fmt.Errorf("events: connect %s: %w", c.base.Host, s.explain(err))
	}
	if resp.StatusCode != http.StatusOK {
		defer s.stop()
		defer resp.Body.Close()
		return nil, readAPIError(resp)
	}
	s.body, s.r = resp.Body, bufio.NewReaderSize(resp.Body, 64<<10)
	s.id = resp.Header.Get(StreamIDHeader)
	s.disarm()
	return s, nil
}

// ID returns the Events API's id of the stream, for EndStream ("" when the
// server sent none).
func (s *Stream) ID() string { return s.id }

// closeWithin closes the stream after d unless it is closed before.
func (s *Stream) closeWithin(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.deadline == nil {
		s.deadline = time.AfterFunc(d, s.stop)
	}
}

// arm (re)starts the watchdog: the stream must deliver data within idle.
// It runs only while the stream waits for data (the answer's headers, or
// inside Next), so a consumer that takes its time between calls of Next
// is never mistaken for a dead connection.
func (s *Stream) arm() {
	if s.watchdog != nil {
		s.watchdog.Reset(s.idle)
	}
}

func (s *Stream) disarm() {
	if s.watchdog != nil {
		s.watchdog.Stop()
	}
}

// stop ends the watchdog and the request.
func (s *Stream) stop() {
	s.disarm()
	s.cancel()
}

// explain marks the error of a read the watchdog ended.
func (s *Stream) explain(err error) error {
	if err != nil && s.silent.Load() {
		return fmt.Errorf("%w (%s): %w", ErrStreamIdle, s.idle, err)
	}
	return err
}

// Next returns the next event. Blank keep-alive lines are skipped. io.EOF
// means the server ended the stream (e.g. after a follow=false snapshot);
// an error wrapping ErrStreamIdle, that nothing (not even a keep-alive
// line) arrived within the stream's IdleTimeout.
func (s *Stream) Next() (Envelope, error) {
	s.arm()
	defer s.disarm()
	for {
		line, err := s.readLine()
		if len(bytes.TrimSpace(line)) > 0 {
			var env Envelope
			if jerr := json.Unmarshal(line, &env); jerr != nil {
				return Envelope{}, fmt.Errorf("events: malformed stream line: %w", jerr)
			}
			return env, nil
		}
		if err != nil {
			return Envelope{}, err
		}
	}
}

func (s *Stream) readLine() ([]byte, error) {
	var buf []byte
	for {
		frag, err := s.r.ReadSlice('\n')
		if len(frag) > 0 {
			s.arm() // data arrived: the connection is alive
		}
		buf = append(buf, frag...)
		if len(buf) > maxLine {
			return nil, fmt.Errorf("events: stream line longer than %d bytes", maxLine)
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			return buf, s.explain(err)
		}
	}
}

// Close ends the stream.
func (s *Stream) Close() error {
	s.mu.Lock()
	if s.deadline != nil {
		s.deadline.Stop()
	}
	s.mu.Unlock()
	s.stop()
	return s.body.Close()
}

// Handler handles one event. An error ends Listen with that error.
type Handler func(ctx context.Context, env Envelope) error

// Listen streams events to h, one at a time, reconnecting with back-off as
// the retry policy says. It returns nil when ctx ends, h's error, a
// permanent *APIError (400/401/403...), or — with retry disabled — the
// first stream error.
func (c *Client) Listen(ctx context.Context, o ListenOptions, h Handler) error {
	start := time.Now()
	connected := false
	delay := c.retry.Min
	for {
		st, err := c.openFor(ctx, o)
		if err == nil {
			connected = true
			delay = c.retry.Min
			if o.OnConnect != nil {
				o.OnConnect()
			}
			err = c.pump(ctx, o, st, h)
			st.Close()
			var herr *handlerError
			if errors.As(err, &herr) {
				return herr.err
			}
			if ctx.Err() != nil {
				return nil
			}
			if o.OnDisconnect != nil {
				o.OnDisconnect(err)
			}
			if errors.Is(err, io.EOF) && o.NoFollow {
				return nil
			}
		}
		if ctx.Err() != nil {
			return nil
		}
		var apiErr *APIError
		if errors.As(err, &apiErr) && apiErr.Permanent() {
			return err
		}
		if !c.retry.Enabled {
			return err
		}
		if !connected && o.ConnectTimeout > 0 && time.Since(start)+delay > o.ConnectTimeout {
			return fmt.Errorf("%w at %s after %s: %w", ErrUnreachable, c.base, time.Since(start).Round(time.Millisecond), err)
		}
		c.log.Debug("events stream reconnecting", "names", o.Names, "in", delay, "err", err)
		if !sleep(ctx, jitter(delay)) {
			return nil
		}
		delay = min(delay*2, c.retry.Max)
	}
}

// openFor opens a stream for Listen. An acknowledged-mode stream outlives
// ctx, so that when ctx ends, stopStream can end it gracefully and pump
// can still read (and release) what the server wrote before its end; ctx
// still aborts the connection attempt.
func (c *Client) openFor(ctx context.Context, o ListenOptions) (*Stream, error) {
	if !o.Ack {
		return c.Open(ctx, o)
	}
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stop := context.AfterFunc(ctx, cancel)
	st, err := c.Open(sctx, o)
	if !stop() { // ctx ended while connecting
		if err == nil {
			st.Close()
		}
		return nil, fmt.Errorf("events: connect %s: %w", c.base.Host, ctx.Err())
	}
	if err != nil {
		cancel()
		return nil, err
	}
	inner := st.cancel
	st.cancel = func() { inner(); cancel() }
	return st, nil
}

type handlerError struct{ err error }

func (e *handlerError) Error() string { return e.err.Error() }

// drainTimeout bounds how long a listener that stops waits for the end of
// its acknowledged-mode stream.
const drainTimeout = 10 * time.Second

func (c *Client) pump(ctx context.Context, o ListenOptions, st *Stream, h Handler) error {
	stop := context.AfterFunc(ctx, func() { c.stopStream(o, st) })
	defer stop()
	for {
		env, err := st.Next()
		if err != nil {
			return err
		}
		if ctx.Err() != nil {
			// Listening has stopped: the handler will not see it.
			c.giveBack(o, env)
			continue
		}
		if err := h(ctx, env); err != nil {
			return &handlerError{err}
		}
	}
}

// stopStream ends st once its listener stops. Without Ack it closes it.
// With Ack, closing could lose what the server wrote just before (it would
// stay with this consumer until its visibility timeout), so it asks the
// server to end the stream and lets pump read up to the end, releasing
// what arrives; it closes the stream when the server cannot end it or the
// end takes longer than drainTimeout.
func (c *Client) stopStream(o ListenOptions, st *Stream) {
	if !o.Ack || st.ID() == "" {
		st.Close()
		return
	}
	st.closeWithin(drainTimeout)
	ctx, cancel := context.WithTimeout(context.Background(), drainTimeout)
	defer cancel()
	if ended, err := c.EndStream(ctx, st.ID()); err != nil || !ended {
		st.Close()
	}
}

// giveBack releases an acknowledged-mode delivery that arrived after its
// listener stopped.
func (c *Client) giveBack(o ListenOptions, env Envelope) {
	if !o.Ack {
		return // at most once: nothing to give back
	}
	ctx, cancel := context.WithTimeout(context.Background(), drainTimeout)
	defer cancel()
	if _, err := c.Release(ctx, env.Name, o.Group, o.Consumer, env.ID); err != nil {
		c.log.Warn("events: delivery received while stopping not released; it is redelivered after its visibility timeout", "name", env.Name, "id", env.ID, "err", err)
	}
}

// jitter spreads d by ±20% so many clients do not reconnect in lockstep.
func jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return d - d/5 + time.Duration(rand.Int64N(int64(d/5)*2+1))
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// CloseIdleConnections closes the client's idle keep-alive connections
// (call it when done with the client, so servers can shut down promptly).
func (c *Client) CloseIdleConnections() { c.http.CloseIdleConnections() }
