#!/usr/bin/env bash
# make compose-test: the local compose stack end to end, on a machine that may
# have no Docker, no images and no registry access:
#   1. install what is missing (Debian's docker.io and mmdebstrap; the
#      docker compose v2 plugin, built from its Go module in the background);
#   2. start dockerd when none answers (and stop it again at the end);
#   3. make compose-context: Go binaries, Codex binary, local Debian base image;
#   4. BUS_CODEX_PROVIDER=static docker compose up --build -d, then the smoke
#      script (the whole path to the worker and back, without Codex credentials);
#   5. docker compose down -v, and check that nothing of the stack is left.
#
# Environment: CODEX_VERSION and COMPOSE_VERSION (from the Makefile),
# LOCAL_AI_PLATFORM_PORT (default 8080, or a free port when 8080 is taken),
# BUS_COMPOSE_DOCKERD_ARGS (extra dockerd flags).
set -euo pipefail
cd "$(dirname "$0")/../.."

t0=$SECONDS
step() { echo "== compose-test [$((SECONDS - t0))s]: $*"; }
die() { echo "compose-test: error: $*" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/bus-compose-test.XXXXXX")
dockerd_pid=
compose_pid=
stack_up=0

cleanup() {
	local rc=$?
	set +e
	if [ -n "$compose_pid" ]; then kill "$compose_pid" 2>/dev/null; wait "$compose_pid" 2>/dev/null; fi
	if [ "$stack_up" = 1 ]; then
		step "docker compose down -v (cleanup)"
		docker compose --profile redis down -v --remove-orphans >/dev/null 2>&1
	fi
	if [ -n "$dockerd_pid" ]; then
		step "stopping the dockerd this test started (pid $dockerd_pid)"
		kill -TERM "$dockerd_pid" 2>/dev/null
		for _ in $(seq 60); do kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 0.5; done
		if kill -0 "$dockerd_pid" 2>/dev/null; then kill -KILL "$dockerd_pid" 2>/dev/null; fi
		wait "$dockerd_pid" 2>/dev/null
	fi
	rm -rf "$work"
	if [ $rc = 0 ]; then
		step "passed"
	else
		echo "== compose-test [$((SECONDS - t0))s]: FAILED (exit $rc)" >&2
	fi
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step "install what is missing"
scripts/compose/install.sh packages
# The compose plugin build runs beside the Go build and mmdebstrap below.
scripts/compose/install.sh compose >"$work/compose-install.log" 2>&1 &
compose_pid=$!

if docker info >/dev/null 2>&1; then
	step "a Docker engine is already running: using it (and leaving it running)"
else
	start_dockerd() {
		local log="${TMPDIR:-/tmp}/bus-compose-dockerd.log"
		# shellcheck disable=SC2086
		dockerd ${BUS_COMPOSE_DOCKERD_ARGS:-} "$@" >"$log" 2>&1 &
		dockerd_pid=$!
		for _ in $(seq 120); do
			docker info >/dev/null 2>&1 && return 0
			kill -0 "$dockerd_pid" 2>/dev/null || break
			sleep 0.5
		done
		echo "compose-test: dockerd $* did not come up; its log:" >&2
		tail -n 15 "$log" >&2
		kill "$dockerd_pid" 2>/dev/null
		wait "$dockerd_pid" 2>/dev/null
		dockerd_pid=
		return 1
	}
	step "starting dockerd (log: ${TMPDIR:-/tmp}/bus-compose-dockerd.log)"
	start_dockerd || { step "retrying dockerd with --storage-driver=vfs"; start_dockerd --storage-driver=vfs; } ||
		die "could not start dockerd"
	docker version --format 'engine {{.Server.Version}}, API {{.Server.APIVersion}}'
fi

step "make compose-context (Go binaries, Codex binary, local Debian base image)"
scripts/compose/context.sh

step "waiting for the docker compose plugin"
if ! wait "$compose_pid"; then
	compose_pid=
	cat "$work/compose-install.log" >&2
	die "installing docker compose failed"
fi
compose_pid=
cat "$work/compose-install.log"
docker compose version

if [ -z "${LOCAL_AI_PLATFORM_PORT:-}" ]; then
	LOCAL_AI_PLATFORM_PORT=8080
	while (exec 3<>"/dev/tcp/127.0.0.1/$LOCAL_AI_PLATFORM_PORT") 2>/dev/null; do
		LOCAL_AI_PLATFORM_PORT=$((LOCAL_AI_PLATFORM_PORT + 1))
	done
fi
export LOCAL_AI_PLATFORM_PORT
export BUS_CODEX_PROVIDER=static

step "BUS_CODEX_PROVIDER=static docker compose up --build -d (port $LOCAL_AI_PLATFORM_PORT)"
stack_up=1
docker compose up --build -d

step "smoke: tests/superproject/test_local_ai_platform_compose_smoke.sh"
bash tests/superproject/test_local_ai_platform_compose_smoke.sh

step "docker compose down -v"
docker compose --profile redis down -v --remove-orphans
stack_up=0
left=$(docker ps -aq --filter label=com.docker.compose.project=bus-integration-codex)
[ -z "$left" ] || die "containers left after docker compose down -v: $left"
left=$(docker volume ls -q --filter label=com.docker.compose.project=bus-integration-codex)
[ -z "$left" ] || die "volumes left after docker compose down -v: $left"
step "nothing of the stack is left"
