#!/usr/bin/env bash
# Regenerates src/bpf/vmlinux/arm64/vmlinux.h from the BTF of Debian 12's
# arm64 cloud kernel (the committed one: linux-image-6.12.118+deb12-cloud-arm64):
# downloads the package, finds the BTF blob in the kernel image and dumps it
# as C with bpftool. Run as root on Debian; needs bpftool and python3.
set -euo pipefail
cd "$(dirname "$0")/.."
package="${1:-linux-image-6.12.118+deb12-cloud-arm64-unsigned}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
dpkg --print-foreign-architectures | grep -qx arm64 || dpkg --add-architecture arm64
apt-get update -q
(cd "$work" && apt-get download "$package:arm64" && dpkg-deb -x ./*.deb root)
python3 - "$work" <<'PY'
import glob, gzip, struct, sys
work = sys.argv[1]
image = open(glob.glob(f"{work}/root/boot/vmlinuz-*")[0], "rb").read()
if image[:2] == b"\x1f\x8b":
    image = gzip.decompress(image)
# struct btf_header: magic 0xeb9f, version 1, flags 0, hdr_len 24, then offsets and lengths.
best = None
at = image.find(b"\x9f\xeb\x01\x00\x18\x00\x00\x00")
while at >= 0:
    _, _, _, hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from("<HBBIIIII", image, at)
    size = hdr_len + max(type_off + type_len, str_off + str_len)
    if best is None or size > best[1]:
        best = (at, size)
    at = image.find(b"\x9f\xeb\x01\x00\x18\x00\x00\x00", at + 1)
if best is None:
    sys.exit("no BTF in the kernel image")
open(f"{work}/vmlinux.btf", "wb").write(image[best[0]:best[0] + best[1]])
PY
mkdir -p src/bpf/vmlinux/arm64
bpftool btf dump file "$work/vmlinux.btf" format c > src/bpf/vmlinux/arm64/vmlinux.h
echo "wrote src/bpf/vmlinux/arm64/vmlinux.h"
