#!/usr/bin/env bash
# Installs what is missing, builds bpfscope, and writes a 10-second system-wide
# CPU flame graph to flamegraph.svg.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release
target/release/bpfscope profile -o flamegraph.svg 10
echo "open flamegraph.svg in a browser"
