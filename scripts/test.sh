#!/usr/bin/env bash
# Runs the whole test suite (unit tests and end-to-end tests that load real
# BPF programs, so it must run as root). Installs what it needs first.
set -euo pipefail
cd "$(dirname "$0")/.."
# chromium: serve's live page is tested in a headless browser.
scripts/install-deps.sh chromium
export PATH="$HOME/.cargo/bin:$PATH"

# The cgroup test needs a cgroup v2 hierarchy; hybrid hosts have it at
# /sys/fs/cgroup/unified, pure v1 hosts may have none.
if ! grep -q ' cgroup2 ' /proc/self/mounts; then
    mkdir -p /sys/fs/cgroup/unified 2>/dev/null || mkdir -p /run/bpfscope-cgroup2
    mount -t cgroup2 none /sys/fs/cgroup/unified 2>/dev/null || mount -t cgroup2 none /run/bpfscope-cgroup2
fi

cargo build --all-targets
cargo test -- --test-threads=2
