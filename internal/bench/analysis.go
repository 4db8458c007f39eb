package bench

import (
	"fmt"
	"strconv"
	"strings"
)

// analysis explains, for every goal the run missed, what limits it, with
// the run's own numbers and what the CPU profiles of this code showed.
func analysis(r *Report) []string {
	var out []string
	for _, g := range r.Goals {
		if g.Met == nil || *g.Met {
			continue
		}
		text := ""
		switch g.ID {
		case goalStaticRPS:
			text = staticRPSLimits(r)
		case goalStaticP50:
			text = "at concurrency 1 a request is the client's HTTP exchange plus four more on loopback " +
				"(the front door's publish, the Events API's stream line to the worker, the worker's response " +
				"publish, the stream line back to the front door; the acknowledgement follows off the path), " +
				"each with an HS256 token check and a JSON decode of the nested payload; on a loaded machine " +
				"every hop also waits for a core. " + contention(r)
		case goalBusOverhead:
			text = busOverheadLimits(r)
		case goalPlainBytes:
			text = plainBytesLimits(r)
		case goalFunctionCost:
			text = functionCostLimits(r)
		case goalCacheKeys:
			text = "the turns of one conversation reached the model under more than one prompt_cache_key: the codex " +
				"provider ran a turn on a fresh thread instead of continuing the live thread whose transcript the request " +
				"extends (internal/provider/codex: conversations.claim and the transcript hashes of history.go decide that)."
		case goalToolStep:
			text = toolStepLimits(r)
		case goalCodexCPU:
			text = codexCPULimits(r)
		case goalWaiting:
			text = waitingLimits(r)
		case goalMemoryLatP50:
			text = "one HTTP POST and one flushed NDJSON line on loopback; the memory backend wakes every " +
				"waiting subscriber on each publish (one shared channel), so the delivery competes with every " +
				"other stream's wake-up. " + contention(r)
		}
		out = append(out, fmt.Sprintf("**%s** (%s; target %s): %s", g.Name, g.Measured, g.Target, text))
	}
	if s := stalls(r); s != "" {
		out = append(out, s)
	}
	return out
}

// bestPlain is the plain row with the highest median rate.
func bestPlain(r *Report) *StaticRow {
	var best *StaticRow
	if r.Static == nil {
		return nil
	}
	for i, row := range r.Static.Rows {
		if !row.Stream && (best == nil || row.RPS.Median > best.RPS.Median) {
			best = &r.Static.Rows[i]
		}
	}
	return best
}

func contention(r *Report) string {
	row := bestPlain(r)
	if row == nil || len(row.CoresUsed.Runs) == 0 {
		return ""
	}
	return fmt.Sprintf("During the static runs this process got %s of the machine's %d cores (other work shared them).",
		fmtNum(row.CoresUsed.Median), r.Machine.Cores)
}

func staticRPSLimits(r *Report) string {
	row := bestPlain(r)
	if row == nil {
		return ""
	}
	cores := float64(max(1, r.Machine.Cores))
	cpu := row.CPUPerRequest.Median
	var b strings.Builder
	fmt.Fprintf(&b, "CPU. Each plain request costs this process about %s µs of CPU (client, front door, Events API and worker together), ", fmtThousands(cpu))
	if cpu > 0 {
		fmt.Fprintf(&b, "so with %d cores to itself the stack would top out near %s req/s; 3,000 req/s needs ≤ %s µs per request. ",
			r.Machine.Cores, fmtThousands(cores*1e6/cpu), fmtThousands(cores*1e6/3000))
	}
	fmt.Fprintf(&b, "The run got %s of the %d cores", fmtNum(row.CoresUsed.Median), r.Machine.Cores)
	if row.CoresUsed.Median < 0.9*cores {
		b.WriteString(" (the machine is shared: other work took the rest)")
	}
	b.WriteString(". ")
	b.WriteString("A plain request is the client's HTTP exchange plus three POSTs to the Events API (the front door's " +
		"publish, the worker's response publish and its acknowledgement) and two NDJSON stream deliveries, each " +
		"with an HS256 token check and a JSON decode and re-encode of the nested payload; a streaming request adds a " +
		"POST and a delivery per chunk. A CPU profile of this section taken when the benchmark was written " +
		"(`go run ./tools/bus-bench --sections static --cpuprofile static.prof`, then `go tool pprof -top -cum`; " +
		"categories overlap) put about 21 % of the CPU in encoding/json (the request body is decoded and " +
		"re-encoded at every hop, nested inside the event envelope), 20 % in syscalls (a write per flushed event " +
		"and per HTTP message), 25 % in net/http's client transport (the publishes and acknowledgements to the " +
		"Events API) and 16 % in its server side, 10 % in allocation, 2.5 % in the memory backend waking every " +
		"stream on each publish, 0.5 % in the event-name regexp, and 0.2 % in JWT verification (verified tokens are " +
		"cached; before that it was 9 %). No single cheap CPU fix remains: 3,000 req/s on 2 cores would need fewer hops " +
		"or fewer bytes per hop — batching (several events per stream flush and per publish, chunk frames published " +
		"in batches, the acknowledgement folded into the response publish) or an in-process transport when the " +
		"front door, Events API and worker share a process.")
	return b.String()
}

func busOverheadLimits(r *Report) string {
	c := r.Codex
	if c == nil {
		return ""
	}
	transport := c.BusP50.Median - c.BusProviderP50.Median
	provider := c.BusProviderP50.Median - c.DirectP50.Median
	return fmt.Sprintf("of the added time, about %s ms is transport (bus p50 − the codex provider's own Run p50 inside the worker) "+
		"and %s ms is the provider around the same App Server turn (its Run p50 − the direct p50). The transport is the "+
		"static round trip's path (section 2) with a larger body; on a loaded machine the App Server's own CPU "+
		"work after each turn competes with it. %s", fmtNum(transport), fmtNum(provider), contention(r))
}

// stalls explains requests that took seconds or failed in the static
// section, when the run saw any.
func stalls(r *Report) string {
	if r.Static == nil {
		return ""
	}
	var worst float64
	errs := 0
	for _, row := range r.Static.Rows {
		worst = max(worst, row.Max.Max)
		errs += row.Errors
	}
	if worst < 1000 && errs == 0 {
		return ""
	}
	noun := "errors"
	if errs == 1 {
		noun = "error"
	}
	return fmt.Sprintf("**Stalls in the static round trip** (slowest request %s ms, %d %s). One cause, found with this "+
		"benchmark: the Events API's prefetch window can leak credits. `handleStream` (internal/eventsapi/server.go) writes and flushes an "+
		"acknowledged delivery before it records it in the window and the ack index; when the worker acknowledges "+
		"in between (a static answer takes well under a millisecond), `handleAck` finds nothing to release, and the "+
		"credit stays taken until the visibility deadline (request timeout + 10 s). After a burst at concurrency 64 "+
		"the window fills with such credits and the worker's stream stops until they expire: the next requests wait "+
		"tens of seconds (51 s with the default 60 s timeout when it was found). Recording the delivery before "+
		"writing it fixes this.", fmtNum(worst), errs, noun)
}

func plainBytesLimits(r *Report) string {
	m := r.Modes.received("model")
	if m == nil {
		return ""
	}
	p := m.Plain
	return fmt.Sprintf("the body is %s bytes: the input array %s (%d items), the tools array %s (%d tools), and %s of "+
		"request fields Codex always sends (model, reasoning, include, store, prompt_cache_key and client_metadata with its "+
		"turn metadata, ≈ 1.1 KB that no setting removes). Only the input is the caller's.",
		fmtBytes(p.Bytes), fmtBytes(p.InputBytes), p.InputItems, fmtBytes(p.ToolsBytes), p.Tools, fmtBytes(p.Bytes-p.InputBytes-p.ToolsBytes))
}

func functionCostLimits(r *Report) string {
	m := r.Modes.received("model")
	if m == nil || len(r.Modes.SchemaBytes) == 0 {
		return ""
	}
	return fmt.Sprintf("one function made the request %s bytes larger (input %+d, tools %+d) for a %d-byte schema; what is "+
		"added beyond the schema is the provider's developer text about tools (tool_choice, parallel_tool_calls) or "+
		"Codex's rendering of the function.",
		fmtBytes(m.OneFunction.Bytes-m.Plain.Bytes), m.OneFunction.InputBytes-m.Plain.InputBytes,
		m.OneFunction.ToolsBytes-m.Plain.ToolsBytes, r.Modes.SchemaBytes[0])
}

func toolStepLimits(r *Report) string {
	t := r.Modes.timing("model")
	if t == nil {
		return ""
	}
	return fmt.Sprintf("a tool step took p50 %s ms against %s ms for a plain answer. The step returns at the model-step "+
		"boundary (rawResponse/completed and an item/tool/call for every call of the response), so what it adds is "+
		"the time from the model's response to the last held call, plus the client function in the thread (the "+
		"per-thread dynamic tool); %s", fmtNum(t.ToolStepP50.Median), fmtNum(t.PlainP50.Median), contention(r))
}

func codexCPULimits(r *Report) string {
	m := r.Modes
	t := m.timing("model")
	if t == nil { // also when m is nil
		return ""
	}
	var b strings.Builder
	fmt.Fprintf(&b, "through the provider the App Server spent %s ms of CPU per plain request. ", fmtNum(t.CPUPlain.Median))
	if len(m.DirectCPU.Runs) > 0 {
		d := m.DirectCPU.Median
		fmt.Fprintf(&b, "The same model request's thread and turn run directly on the App Server (thread/start, turn/start, "+
			"thread/unsubscribe; no bus, no provider) cost it %s ms, so Codex's own work for a request on a new thread is "+
			"about %s ms on this machine and the provider's way of running it adds about %s ms. ",
			fmtNum(d), fmtNum(d), fmtNum(t.CPUPlain.Median-d))
	}
	fmt.Fprintf(&b, "A turn on a live thread costs less: %s ms per conversation turn (one new thread for four turns). "+
		"This CPU is the Rust codex binary's, which --cpuprofile (the Go process) cannot see; `perf record -g -p <pid>` "+
		"of the native codex process can. The machine is shared: the load average was %s at the start and %s at the end.",
		fmtNum(t.CPUConversation.Median), r.Machine.LoadAvgStart, r.Machine.LoadAvgEnd)
	return b.String()
}

func waitingLimits(r *Report) string {
	c := r.Concurrency.config(configDefault)
	if c == nil {
		return ""
	}
	row, one := c.row(waitingN), c.row(1)
	if row == nil {
		return ""
	}
	cores := float64(max(1, r.Machine.Cores))
	cpu := row.CPUPerRequest.Median * float64(waitingN)
	busy := cpu / (cores * row.Wall.Median)
	var b strings.Builder
	fmt.Fprintf(&b, "the worker admitted %d requests at once (--concurrency), and the %d cost the App Server %s ms of "+
		"CPU each, %s ms together, in a wall time of %s ms on %d cores: %.0f %% of the machine. ",
		c.Concurrency, waitingN, fmtNum(row.CPUPerRequest.Median), fmtNum(cpu), fmtNum(row.Wall.Median), r.Machine.Cores, 100*busy)
	load := max(loadOne(r.Machine.LoadAvgStart), loadOne(r.Machine.LoadAvgEnd))
	switch {
	case busy >= 0.5:
		b.WriteString("The time beyond one request is the App Server's CPU work for the burst (thread starts and turns " +
			"around the model's wait) queueing for the cores, shared with the bench process and the rest of the machine " +
			fmt.Sprintf("(load average %s at the start).", r.Machine.LoadAvgStart))
	case load >= cores:
		fmt.Fprintf(&b, "The machine was oversubscribed by other work: a 1-minute load average of up to %s on %d cores, "+
			"so the burst's CPU, most of it in the thread starts before the model's wait, ran on a share of a core and queued; ",
			fmtNum(load), r.Machine.Cores)
		if one != nil {
			fmt.Fprintf(&b, "even one request took %s ms against the model's %s ms. ", fmtNum(one.Wall.Median), fmtNum(r.Concurrency.ModelDelayMS))
		}
		b.WriteString("The min–max range of the row shows how much the other work moved it between rounds.")
	default:
		b.WriteString("That is not CPU-bound: the requests waited elsewhere (admission, or the App Server serialising " +
			"its thread starts); compare the every-request-admitted worker in section 6.")
	}
	return b.String()
}

// loadOne is the 1-minute figure of a load average as Machine records
// it ("0.52 0.40 0.33"), or 0.
func loadOne(loadavg string) float64 {
	f := strings.Fields(loadavg)
	if len(f) == 0 {
		return 0
	}
	x, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return 0
	}
	return x
}
