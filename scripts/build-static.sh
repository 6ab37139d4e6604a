#!/usr/bin/env bash
# Builds bpfscope as one static executable (the C library, libelf and zlib
# linked in), to copy to hosts as a single file: target/<host triple>/release/bpfscope.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
host=$(rustc -vV | sed -n 's/^host: //p')
# With --target, RUSTFLAGS reach only the target's code, not build scripts
# and proc-macros (which cannot be static).
RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --target "$host" "$@"
echo "target/$host/release/bpfscope"
