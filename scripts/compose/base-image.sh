#!/usr/bin/env bash
# The local Debian base image every compose image starts FROM, made without
# any container registry: mmdebstrap (Debian's debootstrap alternative; minbase
# from the Debian mirror, bookworm-updates and -security included) writes a
# root file system tarball, and `docker import` turns it into an image. The
# tarball is kept in the user's cache, so the image comes back in seconds
# after `docker image prune -a`; both are renewed after BASE_MAX_AGE_DAYS
# (security updates) or when this script changes.
#
# Usage: scripts/compose/base-image.sh        (a running Docker engine)
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
rootfs="$CACHE_DIR/debian-$SUITE-$recipe.tar"
building="$CACHE_DIR/building-$recipe.tar"
max_age=$((BASE_MAX_AGE_DAYS * 86400))

age() { echo $(($(date +%s) - $(date -d "$1" +%s))); }

# The image is current: made from this recipe, and not too old.
current_image() {
	local r created
	r=$(docker image inspect -f '{{index .Config.Labels "bus.base.recipe"}}' "$IMAGE" 2>/dev/null) || return 1
	[ "$r" = "$recipe" ] || return 1
	created=$(docker image inspect -f '{{index .Config.Labels "bus.base.created"}}' "$IMAGE") || return 1
	[ -n "$created" ] && [ "$(age "$created")" -lt "$max_age" ]
}

if current_image; then
	log "$IMAGE is up to date"
	exit 0
fi

start=$(date +%s)
if [ -f "$rootfs" ] && [ -s "$rootfs" ] && [ "$(age "@$(stat -c %Y "$rootfs")")" -lt "$max_age" ]; then
	log "importing $IMAGE from the cached $rootfs"
else
	command -v mmdebstrap >/dev/null || die "mmdebstrap is missing (apt-get install mmdebstrap)"
	mkdir -p "$CACHE_DIR"
	rm -rf "$CACHE_DIR"/debian-"$SUITE"-*.tar "$CACHE_DIR"/building-*.tar
	log "mmdebstrap --variant=minbase $SUITE (from $MIRROR and $SECURITY_MIRROR) ..."
	# Small images: no recommends, no docs, man pages or locales; dpkg
	# without fsync (a throw-away build, as in Debian's own Docker images).
	if ! mmdebstrap --variant=minbase --format=tar --include="$INCLUDE" \
		--aptopt='APT::Install-Recommends "false"' \
		--aptopt='APT::Install-Suggests "false"' \
		--dpkgopt='force-unsafe-io' \
		--dpkgopt='path-exclude=/usr/share/doc/*' \
		--dpkgopt='path-include=/usr/share/doc/*/copyright' \
		--dpkgopt='path-exclude=/usr/share/man/*' \
		--dpkgopt='path-exclude=/usr/share/info/*' \
		--dpkgopt='path-exclude=/usr/share/locale/*' \
		"$SUITE" "$building" \
		"deb $MIRROR $SUITE main" \
		"deb $MIRROR $SUITE-updates main" \
		"deb $SECURITY_MIRROR $SUITE-security main" >"$rootfs.log" 2>&1; then
		tail -n 20 "$rootfs.log" >&2
		rm -rf "$building"
		die "mmdebstrap failed (log above, all of it in $rootfs.log)"
	fi
	[ -f "$building" ] || die "mmdebstrap wrote no tarball at $building"
	mv "$building" "$rootfs"
	rm -f "$rootfs.log"
fi

docker import \
	--change "LABEL bus.base.recipe=$recipe" \
	--change "LABEL bus.base.created=$(date -u -d "@$(stat -c %Y "$rootfs")" +%Y-%m-%dT%H:%M:%SZ)" \
	--change "LABEL org.opencontainers.image.description=\"Debian $SUITE minbase, built locally by scripts/compose/base-image.sh\"" \
	--change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8' \
	--change 'CMD ["bash"]' \
	"$rootfs" "$IMAGE" >/dev/null
log "$IMAGE ready in $(($(date +%s) - start))s (root file system cached in $rootfs)"
