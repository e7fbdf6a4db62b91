#!/usr/bin/env bash
# Builds the cached base root filesystem of the appliance image: a minimal Debian bookworm
# with systemd, systemd-networkd, a kernel whose modules are cut down to what an appliance
# needs, and a small zstd initramfs. Output: a sorted, SOURCE_DATE_EPOCH-stamped tar.zst.
#
# usage: images/base.sh OUTPUT.tar.zst
# The mirrors are mmdebstrap's defaults for a stable release (main, updates, security).
set -euo pipefail

out=${1:?usage: base.sh OUTPUT.tar.zst}
here=$(cd "$(dirname "$0")" && pwd)
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1735689600}

packages=(
  systemd systemd-sysv udev dbus kmod
  linux-image-amd64 initramfs-tools zstd
  ca-certificates netbase iproute2 procps
  systemd-boot-efi
)

tmp="$out.partial"
tar="$out.tar.partial"
rm -f "$tmp" "$tar"
mmdebstrap \
  --mode=root \
  --variant=minbase \
  --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
  --format=tar \
  --include="$(IFS=,; echo "${packages[*]}")" \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-exclude=/usr/share/info/*' \
  --setup-hook="$here/initramfs-setup.sh \"\$1\"" \
  --customize-hook="$here/prune-base.sh \"\$1\"" \
  --skip=cleanup/apt/lists \
  bookworm "$tar" </dev/null
# Pinned compression level and one thread: the same tar gives the same bytes.
zstd -q -T1 -10 --rm -f "$tar" -o "$tmp"
mv "$tmp" "$out"
