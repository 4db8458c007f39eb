#!/usr/bin/env bash
# Everything `docker compose up --build` needs that it cannot make itself
# without a container registry, prepared on the host:
#   docker/build/bin/    the Go commands (static: CGO_ENABLED=0, -trimpath)
#   docker/build/codex/  Codex's static native binary and the files it ships
#                        beside it, from the pinned @openai/codex npm package
#                        (.tools/codex, Makefile CODEX_VERSION)
#   the local Debian base image (scripts/compose/base-image.sh)
#
# Usage: CODEX_VERSION=x.y.z scripts/compose/context.sh   (make compose-context)
set -euo pipefail
cd "$(dirname "$0")/../.."

GO=${GO:-go}
MAKE=${MAKE:-make}
TOOLS=${TOOLS:-$PWD/.tools}
: "${CODEX_VERSION:?CODEX_VERSION is not set (make compose-context passes it from the Makefile)}"
out=docker/build

log() { echo "compose-context: $*" >&2; }
die() { echo "compose-context: error: $*" >&2; exit 1; }

# 1. Go commands.
start=$(date +%s)
mkdir -p "$out/bin"
CGO_ENABLED=0 "$GO" build -trimpath -ldflags "-s -w" -o "$out/bin/" \
	./cmd/bus-operator-token ./cmd/bus-api-provider-events \
	./cmd/bus-api-provider-llm ./cmd/bus-integration-codex
log "Go commands built in $(( $(date +%s) - start ))s"

# 2. Codex: the pinned npm package's native binary (no Node.js needed).
case "$(uname -m)" in
x86_64 | amd64) pkg=codex-linux-x64 triple=x86_64-unknown-linux-musl ;;
aarch64 | arm64) pkg=codex-linux-arm64 triple=aarch64-unknown-linux-musl ;;
*) die "no Codex native binary for $(uname -m)" ;;
esac
installed() { sed -n 's/^ *"version": *"\([^"]*\)".*/\1/p' "$TOOLS/codex/node_modules/@openai/codex/package.json" 2>/dev/null | head -n 1; }
if [ "$(installed)" != "$CODEX_VERSION" ]; then
	[ -z "$(installed)" ] || log "installed Codex $(installed) is not the pinned $CODEX_VERSION: reinstalling"
	rm -rf "$TOOLS/codex"
	"$MAKE" --no-print-directory codex
fi
[ "$(installed)" = "$CODEX_VERSION" ] || die "could not install @openai/codex@$CODEX_VERSION into $TOOLS/codex"
src="$TOOLS/codex/node_modules/@openai/$pkg/vendor/$triple"
[ -d "$src" ] || die "$src is missing: the npm package has no native binary for this platform"
mkdir -p "$out/codex"
find "$out/codex" -mindepth 1 -maxdepth 1 ! -name .keep -exec rm -rf {} +
cp -al "$src/." "$out/codex/" 2>/dev/null || cp -a "$src/." "$out/codex/"
# The realtime-voice runtime is not used by codex app-server.
rm -rf "$out/codex/codex-resources/voice"
log "Codex $CODEX_VERSION ($pkg) copied to $out/codex"

# 3. The local Debian base image.
if ! docker info >/dev/null 2>&1; then
	die "no Docker engine answers: start dockerd (make compose-test starts one itself)"
fi
scripts/compose/base-image.sh
