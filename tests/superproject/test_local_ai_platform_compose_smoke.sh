#!/usr/bin/env bash
# Smoke check of the local compose stack, after `docker compose up --build -d`
# at the repository root (README "Local compose"):
#   - waits until nginx answers /readyz (the front door's readiness);
#   - only nginx publishes a port;
#   - /v1/models through nginx with the caller's token lists codex-chatgpt,
#     and answers 401 without a token and with a bad one;
#   - the worker image has the Codex CLI;
#   - with the static provider (BUS_CODEX_PROVIDER=static docker compose up ...):
#     a chat completion, plain and streamed, through nginx -> front door ->
#     Events API -> worker and back ("Echo: ...");
#   - with BUS_LOCAL_AI_PLATFORM_LIVE_CODEX=1: a live chat completion on Codex
#     (needs Codex credentials in ${BUS_CODEX_HOME:-$HOME/.codex}).
# Exits non-zero with a one-line reason on the first miss.
set -euo pipefail
cd "$(dirname "$0")/../.."

port=${LOCAL_AI_PLATFORM_PORT:-8080}
base="http://127.0.0.1:$port"
ready_timeout=${BUS_SMOKE_READY_TIMEOUT:-180}
live=${BUS_LOCAL_AI_PLATFORM_LIVE_CODEX:-0}
passed=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

say() { echo "smoke: $*"; }
ok() { passed=$((passed + 1)); echo "ok   - $*"; }
fail() {
	echo "FAIL - $*" >&2
	echo "$passed passed, 1 failed"
	exit 1
}
diagnose() {
	{
		echo "--- docker compose ps"
		docker compose ps -a 2>&1 || true
		for s in "$@"; do
			echo "--- docker compose logs --tail 20 $s"
			docker compose logs --no-color --tail 20 "$s" 2>&1 || true
		done
	} >&2
}

# http METHOD PATH [curl args...]: the status code; the body goes to $tmp/body.
http() {
	local method=$1 path=$2
	shift 2
	curl -sS -o "$tmp/body" -w '%{http_code}' -X "$method" --max-time "${max_time:-30}" "$@" "$base$path" 2>"$tmp/curl.err" || true
}
body() { cat "$tmp/body"; }
# has REGEX: the response body matches the extended regular expression.
has() { grep -Eq -- "$1" "$tmp/body"; }

command -v curl >/dev/null || fail "curl is missing"
docker compose version >/dev/null 2>&1 || fail "'docker compose' (v2) is not available"

# The stack is up.
if [ -z "$(docker compose ps -q --status running nginx 2>/dev/null)" ]; then
	diagnose
	fail "nginx is not running: start the stack first with 'docker compose up --build -d'"
fi

# Readiness: nginx -> front door /readyz (its response listeners are connected).
deadline=$((SECONDS + ready_timeout))
until [ "$(max_time=5 http GET /readyz)" = 200 ]; do
	if [ $SECONDS -ge $deadline ]; then
		diagnose nginx bus-llm bus-events
		fail "$base/readyz did not answer 200 within ${ready_timeout}s"
	fi
	sleep 1
done
ok "$base/readyz answers 200"

# Only nginx publishes a port.
published=$(docker ps --filter label=com.docker.compose.project=bus-integration-codex \
	--format '{{.Label "com.docker.compose.service"}} {{.Ports}}' | grep -- '->' | cut -d' ' -f1 | sort -u | tr '\n' ' ')
[ "$published" = "nginx " ] || fail "published ports: expected nginx only, got: ${published:-none}"
ok "only nginx publishes a port"

# The caller's token, written by bus-init.
token=$(docker compose exec -T bus-llm cat /var/lib/bus/auth/api-token 2>/dev/null | tr -d '\r\n') ||
	true
[ -n "$token" ] || fail "could not read the caller's token: docker compose exec bus-llm cat /var/lib/bus/auth/api-token"
auth=(-H "Authorization: Bearer $token")

code=$(http GET /v1/models "${auth[@]}")
[ "$code" = 200 ] || fail "GET /v1/models with the caller's token: HTTP $code: $(body) $(cat "$tmp/curl.err")"
has '"object" *: *"list"' || fail "GET /v1/models: not a model list: $(body)"
has '"id" *: *"codex-chatgpt"' || fail "GET /v1/models: codex-chatgpt is not listed: $(body)"
ok "GET /v1/models lists codex-chatgpt"

code=$(http GET /v1/models/codex-chatgpt "${auth[@]}")
[ "$code" = 200 ] && has '"id" *: *"codex-chatgpt"' || fail "GET /v1/models/codex-chatgpt: HTTP $code: $(body)"
ok "GET /v1/models/codex-chatgpt answers the model"

code=$(http GET /v1/models)
[ "$code" = 401 ] || fail "GET /v1/models without a token: expected 401, got HTTP $code: $(body)"
has '"error"' || fail "GET /v1/models without a token: not an OpenAI error object: $(body)"
ok "GET /v1/models without a token answers 401"

code=$(http GET /v1/models -H "Authorization: Bearer not-a-valid-token")
[ "$code" = 401 ] || fail "GET /v1/models with an invalid token: expected 401, got HTTP $code: $(body)"
ok "GET /v1/models with an invalid token answers 401"

# The worker image has the Codex CLI.
out=$(docker compose exec -T bus-codex codex --version 2>&1) || fail "codex --version in bus-codex failed: $out"
version=$(printf '%s\n' "$out" | tr -d '\r' | grep -m 1 '^codex') || fail "codex --version in bus-codex: no version in: $out"
pinned=$(sed -n 's/^CODEX_VERSION *:= *//p' Makefile 2>/dev/null || true)
if [ -n "$pinned" ] && [[ $version != *"$pinned"* ]]; then
	fail "bus-codex runs '$version', not the pinned Codex $pinned (docker compose up --build -d after make compose-context)"
fi
ok "bus-codex has the Codex CLI ($version)"

# The worker's provider, as the stack was started.
provider=$(docker inspect -f '{{range .Config.Env}}{{println .}}{{end}}' "$(docker compose ps -aq bus-codex)" |
	sed -n 's/^BUS_CODEX_PROVIDER=//p')
say "the worker runs the ${provider:-?} provider"

wait_worker() {
	local deadline=$((SECONDS + ready_timeout)) logs
	while :; do
		logs=$(docker compose logs --no-color bus-codex 2>&1 || true)
		grep -q 'worker connected' <<<"$logs" && return 0
		if grep -q 'no Codex credentials' <<<"$logs"; then
			fail "the worker has no Codex credentials: run 'codex login' on the host so that \${BUS_CODEX_HOME:-\$HOME/.codex}/auth.json exists (it is mounted read-only at /root/.codex), then 'docker compose up --build -d'"
		fi
		if [ $SECONDS -ge $deadline ]; then
			diagnose bus-codex bus-events
			fail "the worker did not connect to the Events API within ${ready_timeout}s"
		fi
		sleep 1
	done
}

chat() { # chat CONTENT [stream]: POST /v1/chat/completions
	local stream=${2:-false}
	http POST /v1/chat/completions "${auth[@]}" -H "Content-Type: application/json" \
		-d "{\"model\":\"codex-chatgpt\",\"stream\":$stream,\"messages\":[{\"role\":\"user\",\"content\":\"$1\"}]}"
}

case "$provider" in
static)
	[ "$live" = 1 ] && fail "BUS_LOCAL_AI_PLATFORM_LIVE_CODEX=1 needs the codex provider, but the stack runs BUS_CODEX_PROVIDER=static: docker compose up --build -d without it"
	wait_worker
	msg="compose smoke $RANDOM$RANDOM"
	code=$(chat "$msg")
	[ "$code" = 200 ] || fail "POST /v1/chat/completions (static provider): HTTP $code: $(body)"
	has '"object" *: *"chat.completion"' || fail "POST /v1/chat/completions: not a chat completion: $(body)"
	has "\"content\" *: *\"Echo: $msg\"" || fail "POST /v1/chat/completions: expected the answer \"Echo: $msg\": $(body)"
	ok "chat completion through nginx -> front door -> Events API -> worker: \"Echo: $msg\""
	code=$(chat "$msg streamed" true)
	[ "$code" = 200 ] || fail "POST /v1/chat/completions stream=true: HTTP $code: $(body)"
	has '^data: \[DONE\]' || fail "streamed chat completion: no 'data: [DONE]': $(body)"
	[ "$(grep -c '^data: {' "$tmp/body")" -ge 3 ] || fail "streamed chat completion: fewer than 3 chunks: $(body)"
	has '"content" *: *"Echo:' || fail "streamed chat completion: no Echo chunk: $(body)"
	ok "streamed chat completion (SSE through nginx)"
	code=$(http POST /v1/responses "${auth[@]}" -H "Content-Type: application/json" \
		-d "{\"model\":\"codex-chatgpt\",\"input\":\"$msg response\"}")
	[ "$code" = 200 ] && has "\"text\" *: *\"Echo: $msg response\"" || fail "POST /v1/responses: HTTP $code: $(body)"
	response_id=$(grep -Eo '"id" *: *"resp_[^"]+"' "$tmp/body" | head -n 1 | sed 's/.*"\(resp_[^"]*\)"/\1/')
	code=$(http GET "/v1/responses/$response_id" "${auth[@]}")
	[ "$code" = 200 ] && has "\"id\" *: *\"$response_id\"" || fail "GET /v1/responses/$response_id (the stored response): HTTP $code: $(body)"
	ok "Responses API: created and read back $response_id"
	;;
codex)
	if [ "$live" = 1 ]; then
		wait_worker
		code=$(max_time=${BUS_SMOKE_LIVE_TIMEOUT:-180} chat "Reply with the single word OK.")
		[ "$code" = 200 ] || fail "live Codex chat completion: HTTP $code: $(body) $(cat "$tmp/curl.err")"
		has '"object" *: *"chat.completion"' || fail "live Codex chat completion: not a chat completion: $(body)"
		has '"content" *: *"[^"]' || fail "live Codex chat completion: empty answer: $(body)"
		ok "live Codex chat completion: $(grep -Eo '"content" *: *"[^"]{0,60}' "$tmp/body" | head -n 1)"
	else
		say "skipped the live Codex chat call (set BUS_LOCAL_AI_PLATFORM_LIVE_CODEX=1 with Codex credentials in \${BUS_CODEX_HOME:-\$HOME/.codex})"
	fi
	;;
*)
	fail "cannot tell the worker's provider (BUS_CODEX_PROVIDER='$provider'): is bus-codex created?"
	;;
esac

# The "redis" profile: the Events API and the response store use Redis.
if [ -n "$(docker compose ps -q --status running redis 2>/dev/null)" ]; then
	docker compose logs --no-color bus-events 2>&1 | grep -q 'events api listening.*backend=redis' ||
		fail "the redis profile runs, but the Events API does not use it (recreate the stack: docker compose down; docker compose --profile redis up --build -d)"
	if [ -n "${response_id:-}" ]; then # the calls above went through Redis
		[ -n "$(docker compose exec -T redis redis-cli --scan --pattern '*bus.llm.chat.completions.request' 2>&1)" ] ||
			fail "the redis profile runs, but Redis holds no bus.llm event stream"
		[ -n "$(docker compose exec -T redis redis-cli --scan --pattern "*$response_id" 2>&1)" ] ||
			fail "the redis profile runs, but the response $response_id is not stored in Redis"
	fi
	ok "redis profile: Redis backs the Events API${response_id:+ and the response store}"
	say "stop this stack with: docker compose --profile redis down -v (without --profile, Compose leaves the redis service running)"
else
	backend=$(docker compose logs --no-color bus-events 2>&1 | grep -o 'events api listening.*backend=[a-z]*' | tail -n 1 | sed 's/.*backend=//')
	say "the Events API runs the ${backend:-?} backend"
fi

echo "$passed passed, 0 failed"
