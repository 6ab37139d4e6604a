#!/usr/bin/env bash
# Builds the Debian package: the static binary, bpfscope.service (hardened,
# DynamicUser, only serve's capabilities), /etc/default/bpfscope, an
# example /etc/bpfscope/web.yml, a man page per command and bash, zsh and
# fish completions. Prints the package's path.
#   scripts/build-deb.sh [BINARY [OUTDIR]]   (default: scripts/build-static.sh's binary, target/debian)
set -euo pipefail
cd "$(dirname "$0")/.."
binary=${1:-}
if [ -z "$binary" ]; then
    binary=$(scripts/build-static.sh | tail -n 1)
fi
out=${2:-target/debian}
if readelf --program-headers "$binary" | grep -q INTERP; then
    echo "build-deb: $binary is not static (build it with scripts/build-static.sh)" >&2
    exit 1
fi
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
arch=$(dpkg --print-architecture)
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
install -D -m 0755 "$binary" "$stage/usr/bin/bpfscope"
install -D -m 0644 packaging/bpfscope.service "$stage/lib/systemd/system/bpfscope.service"
install -D -m 0644 packaging/default "$stage/etc/default/bpfscope"
install -D -m 0644 packaging/web.yml "$stage/etc/bpfscope/web.yml"
install -D -m 0644 README.md "$stage/usr/share/doc/bpfscope/README.md"
# Man pages and shell completions, generated from the binary's own flags.
mkdir -p "$stage/usr/share/man/man1"
"$binary" man "$stage/usr/share/man/man1"
gzip -9n "$stage"/usr/share/man/man1/*.1
completions() { install -d "$(dirname "$stage/$2")"; "$binary" completions "$1" > "$stage/$2"; }
completions bash usr/share/bash-completion/completions/bpfscope
completions zsh usr/share/zsh/vendor-completions/_bpfscope
completions fish usr/share/fish/vendor_completions.d/bpfscope.fish
mkdir -p "$stage/DEBIAN"
cat > "$stage/DEBIAN/control" <<CONTROL
Package: bpfscope
Version: $version
Architecture: $arch
Maintainer: bpfscope developers <bpfscope@localhost>
Section: admin
Priority: optional
Installed-Size: $(du -sk "$stage/usr" | cut -f1)
Description: eBPF performance tools: flame graphs, latency histograms, an agent
 CPU and off-CPU flame graphs from stacks counted in kernel, latency
 histograms summed in kernel, and bpfscope serve, an agent for Prometheus and
 continuous profilers (bpfscope.service). One static binary.
CONTROL
printf '/etc/default/bpfscope\n/etc/bpfscope/web.yml\n' > "$stage/DEBIAN/conffiles"
cat > "$stage/DEBIAN/postinst" <<'SCRIPT'
#!/bin/sh
set -e
if [ "$1" = configure ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    systemctl enable --now bpfscope.service || true
fi
SCRIPT
cat > "$stage/DEBIAN/prerm" <<'SCRIPT'
#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
    systemctl disable --now bpfscope.service || true
fi
SCRIPT
cat > "$stage/DEBIAN/postrm" <<'SCRIPT'
#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || true
fi
SCRIPT
chmod 0755 "$stage/DEBIAN/postinst" "$stage/DEBIAN/prerm" "$stage/DEBIAN/postrm"
mkdir -p "$out"
package="$out/bpfscope_${version}_${arch}.deb"
dpkg-deb --root-owner-group --build "$stage" "$package" >/dev/null
echo "$package"
