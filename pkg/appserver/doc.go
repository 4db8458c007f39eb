// Package appserver is a client for the Codex App Server (`codex app-server`,
// JSON-RPC over stdio, from OpenAI's Codex CLI): process lifecycle, the
// JSON-RPC connection, threads, turns, streamed events and server-initiated
// requests (approvals, dynamic tool calls). It was written against
// codex-cli 0.169.0 and 0.171.0 (the pinned version) and their generated
// protocol schemas.
//
// # Use
//
//	p, err := appserver.Start(ctx, appserver.Config{Env: []string{"CODEX_HOME=/srv/codex"}})
//	if errors.Is(err, appserver.ErrNotInstalled) { ... }
//	defer p.Close()
//	res, err := p.Run(ctx, appserver.RunRequest{
//		Cwd:   "/workspace",
//		Input: []appserver.UserInput{appserver.TextInput("Reply OK")},
//		OnEvent: func(ev appserver.Event) {
//			if ev.Kind == appserver.EventAgentMessageDelta { stream(ev.Delta) }
//		},
//	})
//
// Each Run is one fresh ephemeral thread (thread/start with ephemeral=true,
// optional thread/inject_items for history, then turn/start). A [Pool]
// spreads runs over several processes and replaces dead ones.
//
// The ctx given to [Start] (or [NewPool]) bounds the process's life, like
// exec.CommandContext: cancelling it kills the process group. The command
// runs in its own process group (the npm `codex` is a Node launcher that
// spawns the native binary) and Close kills the whole group. If the owner
// dies without Close, the app-server sees EOF on stdin and exits.
//
// # Safety defaults
//
// Threads default to sandbox "read-only" and approval policy "untrusted",
// and every server request is answered by [Deny] unless the caller passes a
// Handler: command and file-change approvals are declined, permission
// requests get an empty grant, dynamic tool calls fail, auth refresh gets a
// JSON-RPC error, unknown methods get -32601. Verified with the real binary:
// a model reply calling exec_command ("touch FILE") yields one
// item/commandExecution/requestApproval, our decline, a commandExecution
// item with status "declined", the model is told "rejected by user", and
// FILE is not created. Only method and ids of server requests are logged.
// Codex's shell snapshot (a login shell per thread, started in its own
// session) is disabled by default; see Config.ShellSnapshot.
//
// # Errors
//
// Failed turns return a [*TurnError] (errors.As) with Kind = the
// codexErrorInfo variant and HTTPStatus when Codex reported one. With a
// custom Responses-API provider and retries disabled, 0.169.0 reports:
//
//	HTTP 401                        → httpConnectionFailed{httpStatusCode:401}
//	HTTP 404, 503                   → httpConnectionFailed{httpStatusCode:N}
//	HTTP 429                        → responseTooManyFailedAttempts{httpStatusCode:429}
//	HTTP 429 insufficient_quota     → usageLimitExceeded
//	HTTP 500                        → internalServerError ("We're currently experiencing high demand…")
//	HTTP 400                        → other (message = the provider's error body)
//
// Each also comes as one "error" notification (willRetry=false) before
// turn/completed. "unauthorized" is reserved for Codex's own OpenAI/ChatGPT
// auth failures. Cancellation returns an error matching ctx.Err() after
// turn/interrupt (the turn ends "interrupted"); process death returns
// [ErrProcessExited]; Close additionally [ErrClosed].
//
// # Account
//
// account/read answers {account, requiresOpenaiAuth}; [Process.Account]
// wraps it. account is null when not logged in, else {type: "apiKey" |
// "chatgpt" (email, planType) | "amazonBedrock" | "gcp"}. With a custom
// model provider that needs no OpenAI auth (the test fake),
// requiresOpenaiAuth is false and account null: no login is needed, and
// [AccountStatus.Ready] is true.
//
// # Concurrency and pool sizing
//
// Measured on the 2-core dev machine (shared, so noisy) with the real
// 0.169.0 binary (npm launcher) and the fake model, 32 runs per row,
// shell snapshot off (TestMeasureConcurrency, BUS_APPSERVER_MEASURE=1):
//
//	model latency  procs  concurrent  runs/s  p50     p95
//	0              1      1           10.8    85ms    175ms
//	0              1      2           17.2    110ms   158ms
//	0              1      8           17.2    436ms   661ms
//	0              2      2           15.0    120ms   202ms
//	0              4      8           15.2    526ms   705ms
//	500ms          1      1            1.7    602ms   638ms
//	500ms          1      4            6.3    616ms   744ms
//	500ms          1      8            9.4    796ms   1.04s
//	500ms          2      8            9.3    766ms   1.06s
//	500ms          4      8            9.7    739ms   986ms
//
// Codex spends ≈60–80 ms CPU per thread+turn. One process serves concurrent
// threads correctly and scales with model latency (waiting is free); with a
// zero-latency model it saturates the CPU at ≈13–17 runs/s on 2 cores, and
// more processes do not add throughput, they add memory (≈190 MiB RSS per
// npm-launched process idle, ≈220 MiB under load). With the shell snapshot
// on, concurrent runs were 5–20× slower (a login shell per thread), so the
// lean settings turn it off. Threads are unloaded when their run ends
// (≈20 KiB left per finished thread); a live conversation thread holds
// ≈0.4 MiB. Growth is bounded by PoolConfig.MaxRSS (a process is retired
// past it); MaxRunsPerProcess remains for callers that want a fixed count.
// The current figures are in the repository's docs/BENCHMARKS.md.
//
// Recommendation: Size = 1 process per 2 cores (a second one mainly for
// fault isolation and restarts without a full outage), and bound
// concurrency by the caller: many requests per process for real models
// whose turns take seconds (the worker admits 16 per process), fewer when
// turns cost more CPU.
//
// It imports only the standard library.
package appserver
