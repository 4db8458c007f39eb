#!/usr/bin/env bash
# The local Debian base image every compose image starts FROM, made without
# any container registry: debootstrap (minbase, from the Debian mirror) ->
# docker import -> apt-get upgrade from bookworm-updates/-security in a
# container -> docker commit. The result is also saved under the user's cache
# so that it comes back with `docker load` after `docker image prune -a`;
# both are renewed after BASE_MAX_AGE_DAYS (security updates).
#
# Usage: scripts/compose/base-image.sh        (root; a running Docker engine)
set -euo pipefail

IMAGE=${BUS_COMPOSE_BASE_IMAGE:-bus-integration-codex/debian:bookworm}
SUITE=bookworm
MIRROR=${BUS_COMPOSE_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${BUS_COMPOSE_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
# ca-certificates: Codex reaches its API over HTTPS; curl: healthchecks.
INCLUDE=ca-certificates,curl
BASE_MAX_AGE_DAYS=${BUS_COMPOSE_BASE_MAX_AGE_DAYS:-7}
CACHE_DIR=${XDG_CACHE_HOME:-$HOME/.cache}/bus-integration-codex/compose

log() { echo "base-image: $*" >&2; }
die() { echo "base-image: error: $*" >&2; exit 1; }

# The recipe (this script) names the cache entry: a changed recipe rebuilds.
recipe=$(sha256sum "$0" | cut -c1-12)
cache="$CACHE_DIR/debian-$SUITE-$recipe.tar"

fresh_image() {
	local r created
	r=$(docker image inspect -f '{{index .Config.Labels "bus.base.recipe"}}' "$IMAGE" 2>/dev/null) || return 1
	[ "$r" = "$recipe" ] || return 1
	created=$(docker image inspect -f '{{.Created}}' "$IMAGE") || return 1
	created=$(date -d "$created" +%s) || return 1
	[ $(( $(date +%s) - created )) -lt $(( BASE_MAX_AGE_DAYS * 86400 )) ]
}

if fresh_image; then
	log "$IMAGE is up to date"
	exit 0
fi
if [ -s "$cache" ] && [ -z "$(find "$cache" -mtime "+$((BASE_MAX_AGE_DAYS - 1))")" ]; then
	log "loading $IMAGE from $cache"
	docker load -i "$cache" >/dev/null
	if fresh_image; then exit 0; fi
	log "the cached image is stale; building a new one"
fi

[ "$(id -u)" = 0 ] || die "debootstrap needs root (run as root, or load an image named $IMAGE)"
command -v debootstrap >/dev/null || die "debootstrap is missing (apt-get install debootstrap)"

work=$(mktemp -d "${TMPDIR:-/tmp}/bus-base.XXXXXX")
cid=
cleanup() {
	[ -n "$cid" ] && docker rm -f "$cid" >/dev/null 2>&1
	rm -rf "$work"
}
trap cleanup EXIT

start=$(date +%s)
log "debootstrap --variant=minbase $SUITE (from $MIRROR) ..."
if ! debootstrap --variant=minbase --include="$INCLUDE" "$SUITE" "$work/root" "$MIRROR" >"$work/debootstrap.log" 2>&1; then
	tail -n 20 "$work/debootstrap.log" >&2
	die "debootstrap failed (log above)"
fi
cat >"$work/root/etc/apt/sources.list" <<EOF
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb $SECURITY_MIRROR $SUITE-security main
EOF
# Keep images small: no package cache, lists, docs, man pages or locales.
cat >"$work/root/etc/apt/apt.conf.d/90bus-local" <<'EOF'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/*.bin || true"; };
EOF
cat >"$work/root/etc/dpkg/dpkg.cfg.d/90bus-local" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
EOF
rm -rf "$work/root/var/cache/apt/archives/"*.deb "$work/root/var/lib/apt/lists/"* \
	"$work/root/usr/share/man/"* "$work/root/usr/share/info/"* "$work/root/usr/share/locale/"*
find "$work/root/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete 2>/dev/null || true

log "docker import ..."
tar -C "$work/root" --numeric-owner -c . | docker import - "$IMAGE-rootfs" >/dev/null
rm -rf "$work/root"

log "apt-get upgrade from $SUITE-updates and $SUITE-security ..."
cid=$(docker create "$IMAGE-rootfs" sh -c \
	'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get upgrade -y -qq >/dev/null && rm -rf /var/lib/apt/lists/*')
docker start -a "$cid" >&2
docker commit \
	--change "LABEL bus.base.recipe=$recipe" \
	--change "LABEL org.opencontainers.image.description=\"Debian $SUITE minbase, built locally by scripts/compose/base-image.sh\"" \
	--change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8' \
	--change 'CMD ["bash"]' \
	"$cid" "$IMAGE" >/dev/null
docker rm "$cid" >/dev/null
cid=
docker rmi "$IMAGE-rootfs" >/dev/null

mkdir -p "$CACHE_DIR"
rm -f "$CACHE_DIR"/debian-"$SUITE"-*.tar
docker save -o "$cache.tmp" "$IMAGE" && mv "$cache.tmp" "$cache"
log "built $IMAGE in $(( $(date +%s) - start ))s (cached in $cache)"
