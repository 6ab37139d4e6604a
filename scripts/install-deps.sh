#!/usr/bin/env bash
# Installs what building and testing bpfscope needs on Debian/Ubuntu (run as root):
# clang (BPF programs), libelf/zlib (libbpf), bpftool (tests inspect links),
# golang-go (tests read pprof output with `go tool pprof`), iproute2 (TCP tests use
# network namespaces), prometheus (serve is checked with promtool and scraped by a
# real server), and a Rust toolchain. Extra packages given as arguments are
# installed too (the test command adds chromium for the live-page test).
set -euo pipefail

packages=(clang libelf-dev zlib1g-dev pkg-config make gcc bpftool golang-go util-linux iproute2 prometheus curl ca-certificates "$@")
missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ((${#missing[@]})); then
    echo "installing: ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi
if ! command -v cargo >/dev/null 2>&1; then
    echo "installing the Rust toolchain with rustup" >&2
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
fi

# CPython 3.7 to 3.13 from pyenv (the machine image has pyenv): Python-frame
# tests run every version 3.8 to 3.13 and use 3.7 as one without offsets;
# a version missing here makes them fail, never skip.
if command -v pyenv >/dev/null 2>&1 || [ -x "$HOME/.pyenv/bin/pyenv" ]; then
    pyenv_bin=$(command -v pyenv || echo "$HOME/.pyenv/bin/pyenv")
    pyenv_root=$("$pyenv_bin" root)
    for minor in 7 8 9 10 11 12 13; do
        if ! compgen -G "$pyenv_root/versions/3.$minor.*" >/dev/null; then
            echo "installing CPython 3.$minor with pyenv" >&2
            "$pyenv_bin" install --skip-existing "3.$minor:latest"
        fi
    done
fi
