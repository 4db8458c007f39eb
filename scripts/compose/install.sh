#!/usr/bin/env bash
# Installs what the local compose stack needs, when it is missing:
#   packages   Debian's docker.io (engine and CLI), mmdebstrap, curl (apt-get, root)
#   compose    the `docker compose` v2 CLI plugin, built from its Go module at
#              COMPOSE_VERSION (Debian 12 does not package it) and installed as
#              /usr/local/lib/docker/cli-plugins/docker-compose (root) or
#              ~/.docker/cli-plugins/docker-compose
#
# Usage: scripts/compose/install.sh packages|compose|all
set -euo pipefail

GO=${GO:-go}
COMPOSE_VERSION=${COMPOSE_VERSION:-v2.35.1}

log() { echo "compose-install: $*" >&2; }
die() { echo "compose-install: error: $*" >&2; exit 1; }

packages() {
	local want=()
	command -v dockerd >/dev/null 2>&1 || want+=(docker.io)
	command -v docker >/dev/null 2>&1 || want+=(docker.io)
	command -v mmdebstrap >/dev/null 2>&1 || want+=(mmdebstrap)
	command -v curl >/dev/null 2>&1 || want+=(curl)
	[ ${#want[@]} -gt 0 ] || return 0
	mapfile -t want < <(printf '%s\n' "${want[@]}" | sort -u)
	if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
		die "missing: ${want[*]} (Debian packages; install them as root)"
	fi
	log "apt-get install ${want[*]}"
	apt-get update -qq
	# Keep the docker.io package from starting its service: compose-test
	# starts (and stops) its own dockerd. policy-rc.d is Debian's switch.
	local policy=
	if [ ! -e /usr/sbin/policy-rc.d ]; then
		policy=/usr/sbin/policy-rc.d
		printf '#!/bin/sh\nexit 101\n' >"$policy"
		chmod 0755 "$policy"
	fi
	local rc=0
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${want[@]}" >/dev/null || rc=$?
	[ -z "$policy" ] || rm -f "$policy"
	[ $rc = 0 ] || die "apt-get install ${want[*]} failed"
}

# usable_compose: `docker compose` runs and is v2.20 or later (depends_on
# "required", used by compose.yaml).
usable_compose() {
	local v major minor
	v=$(docker compose version --short 2>/dev/null) || return 1
	v=${v#v}
	major=${v%%.*}
	minor=${v#*.}
	minor=${minor%%.*}
	[[ $major =~ ^[0-9]+$ && $minor =~ ^[0-9]+$ ]] || return 1
	[ "$major" -gt 2 ] || { [ "$major" = 2 ] && [ "$minor" -ge 20 ]; }
}

compose() {
	if usable_compose; then
		log "docker compose $(docker compose version --short) is installed"
		return 0
	fi
	local dest
	if [ "$(id -u)" = 0 ]; then
		dest=/usr/local/lib/docker/cli-plugins
	else
		dest=${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins
	fi
	command -v "$GO" >/dev/null 2>&1 || die "building docker compose needs Go ($GO)"
	local start=$SECONDS tmp dir
	tmp=$(mktemp -d "${TMPDIR:-/tmp}/bus-compose-build.XXXXXX")
	# shellcheck disable=SC2064
	trap "rm -rf '$tmp'" EXIT
	log "building docker compose $COMPOSE_VERSION from its Go module (a few minutes, once) ..."
	dir=$(cd "$tmp" && GO111MODULE=on GOFLAGS=-mod=mod "$GO" mod download -json "github.com/docker/compose/v2@$COMPOSE_VERSION" |
		sed -n 's/^[[:space:]]*"Dir": "\(.*\)",*$/\1/p')
	[ -n "$dir" ] && [ -d "$dir" ] || die "go mod download github.com/docker/compose/v2@$COMPOSE_VERSION failed"
	cp -r "$dir" "$tmp/src"
	chmod -R u+w "$tmp/src"
	(cd "$tmp/src" && CGO_ENABLED=0 GOFLAGS=-mod=mod "$GO" build -trimpath -buildvcs=false \
		-ldflags "-s -w -X github.com/docker/compose/v2/internal.Version=$COMPOSE_VERSION" \
		-o "$tmp/docker-compose" ./cmd) || die "go build of docker compose $COMPOSE_VERSION failed"
	mkdir -p "$dest"
	install -m 0755 "$tmp/docker-compose" "$dest/docker-compose"
	usable_compose || die "docker compose does not run after installing $dest/docker-compose"
	log "installed docker compose $COMPOSE_VERSION as $dest/docker-compose in $((SECONDS - start))s"
}

case "${1:-all}" in
packages) packages ;;
compose) compose ;;
all) packages && compose ;;
*) die "usage: $0 packages|compose|all" ;;
esac
