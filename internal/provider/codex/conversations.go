package codex

import (
	"container/list"
	"context"
	"sync"
	"time"

	"github.com/busdk/bus-integration-codex/internal/turn"
	"github.com/busdk/bus-integration-codex/pkg/appserver"
)

// conversation is a loaded thread a later request may continue on.
type conversation struct {
	thread *appserver.Thread
	shape  *shape
	// key is the transcript hash of everything the thread has seen, as
	// the client will send it back.
	key [32]byte
	// step is set while a tool step waits for the client's outputs: the
	// turn is still open and its calls are held.
	step *heldStep

	used time.Time
	elem *list.Element
}

// heldStep is a turn that stopped at a model step which called client
// tools.
type heldStep struct {
	turn *appserver.Turn
	// returned are the calls the client received, in order; extra are
	// calls of the step the client did not receive (parallel_tool_calls
	// false), answered with an error when the turn goes on.
	returned []turn.ToolCall
	extra    []string
}

// conversations are the live threads of a provider, looked up by the
// transcript hash of what each has seen, bounded in number and idle time.
// A conversation is out of the index while a request uses it.
type conversations struct {
	max int
	ttl time.Duration

	mu    sync.Mutex
	byKey map[[32]byte]*conversation
	lru   *list.List // front: most recently used
}

func newConversations(max int, ttl time.Duration) *conversations {
	return &conversations{max: max, ttl: ttl, byKey: map[[32]byte]*conversation{}, lru: list.New()}
}

// claim takes the live conversation whose transcript is the longest
// prefix of t (shorter than the whole: something must be new), or nil.
func (c *conversations) claim(t transcript) (*conversation, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k := len(t.hashes) - 2; k >= 0; k-- {
		conv := c.byKey[t.prefix(k)]
		if conv == nil {
			continue
		}
		c.removeLocked(conv)
		if conv.thread.Closed() {
			continue // its process died: drop it
		}
		return conv, k
	}
	return nil, 0
}

// put makes conv available under its key, evicting the least recently
// used conversations beyond the bound.
func (c *conversations) put(conv *conversation) {
	conv.used = time.Now()
	c.mu.Lock()
	if old := c.byKey[conv.key]; old != nil {
		// Two requests ended on the same transcript: keep the newer thread.
		c.removeLocked(old)
		defer closeConversation(old)
	}
	c.byKey[conv.key] = conv
	conv.elem = c.lru.PushFront(conv)
	var evicted []*conversation
	for c.lru.Len() > c.max {
		e := c.lru.Back()
		old := e.Value.(*conversation)
		c.removeLocked(old)
		evicted = append(evicted, old)
	}
	c.mu.Unlock()
	for _, old := range evicted {
		closeConversation(old)
	}
}

func (c *conversations) removeLocked(conv *conversation) {
	if c.byKey[conv.key] == conv {
		delete(c.byKey, conv.key)
	}
	if conv.elem != nil {
		c.lru.Remove(conv.elem)
		conv.elem = nil
	}
}

func (c *conversations) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lru.Len()
}

// sweep closes the conversations idle for longer than the TTL.
func (c *conversations) sweep(now time.Time) {
	var idle []*conversation
	c.mu.Lock()
	for e := c.lru.Back(); e != nil; {
		conv := e.Value.(*conversation)
		prev := e.Prev()
		if now.Sub(conv.used) < c.ttl {
			break
		}
		c.removeLocked(conv)
		idle = append(idle, conv)
		e = prev
	}
	c.mu.Unlock()
	for _, conv := range idle {
		closeConversation(conv)
	}
}

// sweepEvery sweeps until ctx ends.
func (c *conversations) sweepEvery(ctx context.Context, every time.Duration) {
	if every < time.Second {
		every = time.Second
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			c.sweep(now)
		}
	}
}

// closeAll closes every live conversation.
func (c *conversations) closeAll() {
	c.mu.Lock()
	var all []*conversation
	for e := c.lru.Front(); e != nil; e = e.Next() {
		all = append(all, e.Value.(*conversation))
	}
	c.byKey, c.lru = map[[32]byte]*conversation{}, list.New()
	c.mu.Unlock()
	for _, conv := range all {
		closeConversation(conv)
	}
}

// closeConversation ends a conversation's thread (interrupting a held
// step).
func closeConversation(conv *conversation) { conv.thread.Close() }
