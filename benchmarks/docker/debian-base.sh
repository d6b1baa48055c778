#!/bin/sh
# Build the `debian:bookworm-slim` image every connbench image starts FROM, from a Debian mirror, for
# machines that reach Debian's packages but no image registry. Made the way the official image is
# (debuerreotype): debootstrap's minbase variant, then the slim image's settings (no docs or man pages,
# no apt caches, no service starts inside builds), imported as one layer.
#
#   sudo benchmarks/docker/debian-base.sh [--force]
#
# Needs root, debootstrap and a running Docker engine. Does nothing when the image exists (unless --force).
# DEBIAN_MIRROR (default http://deb.debian.org/debian) is the mirror debootstrap downloads from; the image's
# own apt sources are Debian's usual ones (bookworm, bookworm-updates, bookworm-security on deb.debian.org).
set -eu

IMAGE=debian:bookworm-slim
SUITE=bookworm
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"

if [ "${1:-}" != "--force" ] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
    echo "$IMAGE is already there (--force rebuilds it)"
    exit 0
fi
command -v debootstrap >/dev/null || { echo "debootstrap is not installed (apt-get install debootstrap)" >&2; exit 1; }

root="$(mktemp -d "${TMPDIR:-/tmp}/connbench-debian-base.XXXXXX")"
trap 'rm -rf "$root"' EXIT INT TERM

debootstrap --variant=minbase "$SUITE" "$root" "$MIRROR" >"$root.log" 2>&1 || {
    tail -20 "$root.log" >&2
    rm -f "$root.log"
    exit 1
}
rm -f "$root.log"

# The slim image's configuration (debuerreotype-minimizing-config and -slimify).
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod 0755 "$root/usr/sbin/policy-rc.d"
cat >"$root/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/info/*
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
EOF
cat >"$root/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
printf 'Acquire::Languages "none";\n' >"$root/etc/apt/apt.conf.d/docker-no-languages"
printf 'Acquire::GzipIndexes "true";\n' >"$root/etc/apt/apt.conf.d/docker-gzip-indexes"
printf 'Apt::AutoRemove::SuggestsImportant "false";\n' >"$root/etc/apt/apt.conf.d/docker-autoremove-suggests"
rm -f "$root/etc/apt/sources.list"
cat >"$root/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: http://deb.debian.org/debian
Suites: $SUITE $SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: $SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
find "$root/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
rm -rf "$root/usr/share/info"/* "$root/usr/share/man"/* "$root/usr/share/groff"/* "$root/usr/share/lintian"/*
find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +
rm -rf "$root/var/lib/apt/lists"/* "$root/var/cache/apt"/*.bin "$root/var/cache/apt/archives"/*.deb \
    "$root/var/log"/*.log "$root/var/log/apt"/* "$root/tmp"/* "$root/run"/*
: >"$root/etc/machine-id"
printf 'localhost\n' >"$root/etc/hostname"

tar --numeric-owner --xattrs -C "$root" -c . | docker import --change 'CMD ["bash"]' - "$IMAGE" >/dev/null
echo "$IMAGE built from $MIRROR ($(du -sh "$root" | cut -f1))"
