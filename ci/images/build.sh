#!/usr/bin/env bash
# Builds the containers backend's images without any image registry, from
# Debian packages (debootstrap) and PyPI alone:
#
#   drillbook/postgres:local   Debian + postgresql, entrypoint postgres-entrypoint.sh
#   drillbook/moto-s3:local    Debian + python3 + moto[server] in a venv
#
# Each image carries the hash of its recipe (this script, its entrypoint,
# the Debian suite and package list) as the label drillbook.recipe; an image
# with the same hash is kept and not rebuilt. Needs root, docker and
# debootstrap (`apt-get install docker.io debootstrap`) and a running daemon.
#
# Settings: DRILL_IMAGE_SUITE (default: this machine's Debian release, so the
# server matches the local pg_dump), DEBIAN_MIRROR, DRILL_IMAGE_CACHE
# (debootstrap's package cache, default /var/cache/drillbook/debootstrap),
# MOTO_VERSION (pip requirement, default "moto[server]>=5,<6").
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

suite=${DRILL_IMAGE_SUITE:-$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
cache=${DRILL_IMAGE_CACHE:-/var/cache/drillbook/debootstrap}
moto_req=${MOTO_VERSION:-moto[server]>=5,<6}
pg_packages=postgresql,ca-certificates,locales
moto_packages=python3,python3-venv,ca-certificates

log() { echo "build.sh: $*" >&2; }

for tool in docker debootstrap; do
    command -v "$tool" >/dev/null || { log "$tool is missing: apt-get install -y docker.io debootstrap"; exit 2; }
done
docker info >/dev/null 2>&1 || { log "the Docker daemon does not answer: start it (dockerd &)"; exit 2; }
[ "$(id -u)" = 0 ] || { log "debootstrap needs root"; exit 2; }
mkdir -p "$cache"

recipe_hash() { # name, files..., extra words...
    local name=$1; shift
    { echo "$name $suite $mirror"; for arg in "$@"; do if [ -f "$arg" ]; then cat "$arg"; else echo "$arg"; fi; done; } \
        | sha256sum | cut -c1-16
}

up_to_date() { # image, hash
    [ "$(docker image inspect -f '{{ index .Config.Labels "drillbook.recipe" }}' "$1" 2>/dev/null || true)" = "$2" ]
}

rootfs() { # dir, packages
    log "debootstrap $suite ($2) into $1"
    debootstrap --variant=minbase --include="$2" --cache-dir="$cache" "$suite" "$1" "$mirror" >"$1.log" 2>&1 \
        || { tail -n 30 "$1.log" >&2; exit 1; }
}

slim() { # dir: drop what an image does not need
    rm -rf "$1"/var/cache/apt/archives/*.deb "$1"/var/lib/apt/lists/* "$1"/usr/share/doc/* \
        "$1"/usr/share/man/* "$1"/usr/share/info/*
}

import() { # dir, image, hash, docker-import --change lines...
    local dir=$1 image=$2 hash=$3; shift 3
    local changes=()
    for change in "$@"; do changes+=(--change "$change"); done
    tar -C "$dir" -c . | docker import "${changes[@]}" --change "LABEL drillbook.recipe=$hash" - "$image" >/dev/null
    log "built $image (recipe $hash)"
}

work=$(mktemp -d /var/tmp/drillbook-images.XXXXXX)
trap 'rm -rf "$work"' EXIT

pg_image=drillbook/postgres:local
pg_hash=$(recipe_hash postgres "$here/build.sh" "$here/postgres-entrypoint.sh" "$pg_packages")
if up_to_date "$pg_image" "$pg_hash"; then
    log "$pg_image is up to date (recipe $pg_hash)"
else
    started=$(date +%s)
    root=$work/postgres
    rootfs "$root" "$pg_packages"
    # The package's own cluster is not used: the entrypoint makes one in PGDATA.
    rm -rf "$root"/var/lib/postgresql/* "$root"/etc/postgresql/*
    install -m 755 "$here/postgres-entrypoint.sh" "$root/usr/local/bin/docker-entrypoint.sh"
    slim "$root"
    import "$root" "$pg_image" "$pg_hash" \
        'ENV LANG=C.UTF-8 PGDATA=/var/lib/postgresql/data' \
        'EXPOSE 5432' \
        'ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]'
    log "postgres image: $(( $(date +%s) - started )) s"
fi

moto_image=drillbook/moto-s3:local
moto_hash=$(recipe_hash moto "$here/build.sh" "$here/moto-entrypoint.sh" "$moto_packages" "$moto_req")
if up_to_date "$moto_image" "$moto_hash"; then
    log "$moto_image is up to date (recipe $moto_hash)"
else
    started=$(date +%s)
    root=$work/moto
    rootfs "$root" "$moto_packages"
    cp /etc/resolv.conf "$root/etc/resolv.conf"
    log "pip install $moto_req"
    chroot "$root" /usr/bin/python3 -m venv /opt/moto
    # pip runs with this machine's CA bundle (a proxy with its own CA must be
    # trusted as it is here) and proxy settings, then the bundle is removed.
    cp "${PIP_CERT:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}" "$root/tmp/host-ca.crt"
    pip_env=(PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root PIP_CERT=/tmp/host-ca.crt PIP_DISABLE_PIP_VERSION_CHECK=1)
    for var in PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_DEFAULT_TIMEOUT http_proxy https_proxy HTTP_PROXY HTTPS_PROXY no_proxy NO_PROXY; do
        [ -n "${!var:-}" ] && pip_env+=("$var=${!var}")
    done
    chroot "$root" env -i "${pip_env[@]}" /opt/moto/bin/pip install --quiet --no-cache-dir "$moto_req" \
        >"$root.pip.log" 2>&1 || { tail -n 30 "$root.pip.log" >&2; exit 1; }
    rm -f "$root/tmp/host-ca.crt"
    chroot "$root" useradd --system --no-create-home --shell /usr/sbin/nologin moto
    : > "$root/etc/resolv.conf"
    install -m 755 "$here/moto-entrypoint.sh" "$root/usr/local/bin/docker-entrypoint.sh"
    slim "$root"
    import "$root" "$moto_image" "$moto_hash" \
        'ENV LANG=C.UTF-8' \
        'EXPOSE 5000' \
        'ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]'
    log "moto image: $(( $(date +%s) - started )) s"
fi
