#!/usr/bin/env bash
# Runs the whole test suite (unit tests and end-to-end tests that load real
# BPF programs, so it must run as root). Installs what it needs first.
set -euo pipefail
cd "$(dirname "$0")/.."
# chromium: serve's live page is tested in a headless browser. debuginfod
# and binutils: stripped binaries are named from a real debuginfod server
# (over https behind nginx) and from debug files the tests make with objcopy. nodejs and the JDK:
# JIT frames are named from Node's and the JVM's perf maps. The arm64 cross
# toolchain and libraries: the arm64 build is checked to compile. openssl:
# serve's TLS is tested with certificates the test makes. time (GNU): the
# hostile tests assert peak RSS. python3 (Debian's 3.11): a hostile user's
# Python, which pyenv's builds under /root are not readable by.
dpkg --print-foreign-architectures | grep -qx arm64 || dpkg --add-architecture arm64
scripts/install-deps.sh chromium debuginfod nginx-light binutils nodejs openjdk-17-jdk-headless openssl time python3 \
    gcc-aarch64-linux-gnu libelf-dev:arm64 zlib1g-dev:arm64
export PATH="$HOME/.cargo/bin:$PATH"
rustup target list --installed | grep -qx aarch64-unknown-linux-gnu ||
    rustup target add aarch64-unknown-linux-gnu

# The cgroup test needs a cgroup v2 hierarchy; hybrid hosts have it at
# /sys/fs/cgroup/unified, pure v1 hosts may have none.
if ! grep -q ' cgroup2 ' /proc/self/mounts; then
    mkdir -p /sys/fs/cgroup/unified 2>/dev/null || mkdir -p /run/bpfscope-cgroup2
    mount -t cgroup2 none /sys/fs/cgroup/unified 2>/dev/null || mount -t cgroup2 none /run/bpfscope-cgroup2
fi

# The suite runs against the static binary (C library, libelf and zlib linked
# in), as scripts/build-static.sh makes it; tests/static_binary.rs runs it in
# an empty root. With --target, RUSTFLAGS skip build scripts and proc-macros.
# No import runs up a layer (README, "Layers").
python3 scripts/check-layers.py
host=$(rustc -vV | sed -n 's/^host: //p')
export RUSTFLAGS="-C target-feature=+crt-static"
cargo build --all-targets --target "$host"
# arm64: compiles (BPF objects against src/bpf/vmlinux/arm64, frame-pointer user stacks).
CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc \
PKG_CONFIG_ALLOW_CROSS=1 PKG_CONFIG_PATH=/usr/lib/aarch64-linux-gnu/pkgconfig \
    RUSTFLAGS= cargo build --target aarch64-unknown-linux-gnu
cargo test --target "$host" -- --test-threads=2
