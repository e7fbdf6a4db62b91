#!/usr/bin/env bash
# Builds the Gatehouse appliance image from the cached base root filesystem:
#   OUT/gatehouse.raw     ext4 root filesystem (the whole disk; read-only at run time)
#   OUT/gatehouse.qcow2   the same, compressed qcow2
#   OUT/vmlinuz, OUT/initrd.img   for direct kernel boot (root=/dev/vda)
#   OUT/gatehouse-efi.raw  with --efi: a GPT disk for UEFI machines (bare metal, OVMF): an EFI
#                          system partition with systemd-boot, the kernel and initrd, then the root
#
# usage: images/build.sh [--binary PATH] [--strip] [--efi] [--out DIR]
# The base (Debian bookworm, kernel, systemd) is built once by base.sh and cached under
# $GATEHOUSE_IMAGE_CACHE (default /var/tmp/gatehouse-image), keyed by the scripts that make it.
# Needs root (file ownership in the image), mmdebstrap, e2fsprogs, qemu-utils, zstd.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
binary=$repo/target/release/gatehouse
out=$repo/target/image
strip=no
efi=no
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) binary=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --strip) strip=yes; shift ;;
    --efi) efi=yes; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
[ -x "$binary" ] || { echo "no gatehouse binary at $binary (cargo build -p gatehouse)" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "build.sh needs root (file ownership inside the image)" >&2; exit 1; }

# Fixed time, UUIDs and hash seed: the same inputs give the same image.
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1735689600}
export E2FSPROGS_FAKE_TIME=$SOURCE_DATE_EPOCH
root_uuid=6a8f2c1e-4b7d-4e0a-9c3f-1d2e3f4a5b6c
hash_seed=0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0
disk_guid=3b0d6f52-9a1e-4c8b-8f27-5e6d7c8b9a01
esp_partuuid=3b0d6f52-9a1e-4c8b-8f27-5e6d7c8b9a02
root_partuuid=3b0d6f52-9a1e-4c8b-8f27-5e6d7c8b9a03

started=$(date +%s)
step() { printf '[image %4ss] %s\n' "$(( $(date +%s) - started ))" "$*"; }

cache=${GATEHOUSE_IMAGE_CACHE:-/var/tmp/gatehouse-image}
mkdir -p "$cache" "$out"
key=$(cat "$here/base.sh" "$here/initramfs-setup.sh" "$here/prune-base.sh" | sha256sum | cut -c1-16)
base=${GATEHOUSE_IMAGE_BASE:-$cache/base-$key.tar.zst}
# One base build at a time on this machine (parallel test runs share the cache).
exec 9>"$cache/base.lock"
flock 9
if [ -f "$base" ]; then
  step "base: cached $base"
else
  step "base: building $base (mmdebstrap, a few minutes; cached afterwards)"
  "$here/base.sh" "$base"
  step "base: done"
fi
flock -u 9

work=$(mktemp -d "$cache/build.XXXXXX")
trap 'rm -rf "$work"' EXIT
root=$work/root
mkdir "$root"
step "unpacking the base"
zstd -dc "$base" | tar -x -C "$root" --numeric-owner

step "installing gatehouse and its units"
install -D -m 0755 "$binary" "$root/usr/bin/gatehouse"
if [ "$strip" = yes ]; then strip --strip-all "$root/usr/bin/gatehouse"; fi
units=$repo/systemd
install -D -m 0644 -t "$root/usr/lib/systemd/system" \
  "$units/gatehouse.service" "$units/gatehouse-config-drive.service"
install -D -m 0644 "$units/sysusers.d/gatehouse.conf" "$root/usr/lib/sysusers.d/gatehouse.conf"
install -D -m 0644 "$units/sysctl.d/60-gatehouse.conf" "$root/usr/lib/sysctl.d/60-gatehouse.conf"
install -D -m 0755 "$units/config-drive" "$root/usr/lib/gatehouse/config-drive"
install -D -m 0644 "$here/default.toml" "$root/usr/share/gatehouse/default.toml"
install -d -m 0755 "$root/etc/gatehouse"
# The root is read-only: the operator's config comes from the config drive, via /run.
ln -sfn /run/gatehouse-drive/gatehouse.toml "$root/etc/gatehouse/gatehouse.toml"
cp -a "$here/rootfs/." "$root/"

step "users, services, networking"
systemd-sysusers --root="$root" >/dev/null
systemctl --root="$root" enable --quiet \
  gatehouse.service gatehouse-config-drive.service systemd-networkd.service
# Nothing on an appliance updates itself, scrubs or rotates behind the operator's back.
systemctl --root="$root" mask --quiet \
  apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer e2scrub_reap.service \
  fstrim.timer systemd-firstboot.service 2>/dev/null || true
# No logins: root has no password and the console shows the log. (A rescue shell is one
# `systemd.unit=rescue.target` on the kernel command line away.)
systemctl --root="$root" mask --quiet getty@.service serial-getty@.service systemd-logind.service
# Each process a unit starts costs a lot on a slow (emulated) CPU; these do nothing useful on a
# read-only appliance whose /var is memory: debug/trace/hugepage/config file systems, modules it
# never uses, a random seed and utmp records it cannot keep, the journal flush to a volatile /var.
systemctl --root="$root" mask --quiet \
  sys-kernel-debug.mount sys-kernel-tracing.mount sys-kernel-config.mount dev-hugepages.mount \
  proc-sys-fs-binfmt_misc.automount systemd-pstore.service \
  modprobe@dm_mod.service modprobe@efi_pstore.service modprobe@fuse.service modprobe@loop.service \
  modprobe@configfs.service systemd-random-seed.service systemd-journal-flush.service \
  systemd-update-utmp.service systemd-update-utmp-runlevel.service \
  systemd-tmpfiles-clean.timer dpkg-db-backup.timer
echo gatehouse > "$root/etc/hostname"
: > "$root/etc/machine-id"

step "verifying the units inside the image"
if ! verify=$(SYSTEMD_LOG_LEVEL=warning systemd-analyze verify --root="$root" --man=no \
    gatehouse.service gatehouse-config-drive.service 2>&1) || [ -n "$verify" ]; then
  echo "$verify" >&2
  echo "systemd-analyze verify failed" >&2
  exit 1
fi

step "making the ext4 root filesystem"
find "$root" -depth -exec touch --no-dereference --date="@$SOURCE_DATE_EPOCH" {} +
used_kib=$(du -sk --apparent-size "$root" | cut -f1)
size_mib=$(( used_kib * 13 / 10 / 1024 + 64 ))
raw=$out/gatehouse.raw
rm -f "$raw"
truncate -s "${size_mib}M" "$raw"
mkfs.ext4 -q -F -L gatehouse-root -U "$root_uuid" -E "hash_seed=$hash_seed,root_owner=0:0" \
  -O ^has_journal -m 0 -d "$root" "$raw"
# mke2fs -d copies each file's ctime (the time of this build) and atime (its own reads bump it
# under relatime): pin both.
(cd "$root" && find . -mindepth 1 -printf '%P\n') \
  | sed -e 's/"/\\"/g' \
    -e "s|.*|sif \"/&\" ctime @$SOURCE_DATE_EPOCH\nsif \"/&\" atime @$SOURCE_DATE_EPOCH|" \
  | { printf 'sif / ctime @%s\nsif / atime @%s\n' "$SOURCE_DATE_EPOCH" "$SOURCE_DATE_EPOCH"; cat; } \
  > "$work/ctimes"
debugfs -w -f "$work/ctimes" "$raw" >/dev/null 2>&1
cp "$root/boot/vmlinuz-"* "$out/vmlinuz"
cp "$root/boot/initrd.img-"* "$out/initrd.img"

if [ "$efi" = yes ]; then
  step "assembling the GPT/UEFI disk (systemd-boot)"
  esp=$work/esp.img
  esp_mib=64
  mkfs.fat --invariant -C -n ESP -i 5e7a0b1c "$esp" $(( esp_mib * 1024 )) >/dev/null
  mmd -i "$esp" ::/EFI ::/EFI/BOOT ::/loader ::/loader/entries
  mcopy -i "$esp" -m "$root/usr/lib/systemd/boot/efi/systemd-bootx64.efi" ::/EFI/BOOT/BOOTX64.EFI
  mcopy -i "$esp" -m "$root"/boot/vmlinuz-* ::/vmlinuz
  mcopy -i "$esp" -m "$root"/boot/initrd.img-* ::/initrd.img
  printf 'default gatehouse.conf\ntimeout 0\n' > "$work/loader.conf"
  printf 'title Gatehouse\nlinux /vmlinuz\ninitrd /initrd.img\noptions root=PARTUUID=%s ro console=tty0 console=ttyS0\n' \
    "$root_partuuid" > "$work/gatehouse.conf"
  touch --date="@$SOURCE_DATE_EPOCH" "$work/loader.conf" "$work/gatehouse.conf"
  mcopy -i "$esp" -m "$work/loader.conf" ::/loader/loader.conf
  mcopy -i "$esp" -m "$work/gatehouse.conf" ::/loader/entries/gatehouse.conf
  disk=$out/gatehouse-efi.raw
  rm -f "$disk"
  # 1 MiB for the GPT, the ESP, the root, 1 MiB for the backup GPT.
  truncate -s $(( (1 + esp_mib + size_mib + 1) * 1024 * 1024 )) "$disk"
  sfdisk --quiet "$disk" <<PARTITIONS
label: gpt
label-id: $disk_guid
start=1MiB, size=${esp_mib}MiB, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, uuid=$esp_partuuid, name=esp
start=$(( 1 + esp_mib ))MiB, size=${size_mib}MiB, type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, uuid=$root_partuuid, name=root
PARTITIONS
  dd if="$esp" of="$disk" bs=1M seek=1 conv=notrunc status=none
  dd if="$raw" of="$disk" bs=1M seek=$(( 1 + esp_mib )) conv=notrunc,sparse status=none
fi

step "compressing qcow2"
rm -f "$out/gatehouse.qcow2"
qemu-img convert -c -O qcow2 "$raw" "$out/gatehouse.qcow2"

mib() { echo "$(( ($(stat -c %s "$1") + 1048575) / 1048576 )) MiB"; }
step "done in $(( $(date +%s) - started )) s"
printf '  %-22s %s (allocated %s)\n' gatehouse.raw "$(mib "$raw")" "$(du -h "$raw" | cut -f1)"
printf '  %-22s %s\n' gatehouse.qcow2 "$(mib "$out/gatehouse.qcow2")" vmlinuz "$(mib "$out/vmlinuz")" initrd.img "$(mib "$out/initrd.img")"
if [ "$efi" = yes ]; then
  printf '  %-22s %s (allocated %s)\n' gatehouse-efi.raw "$(mib "$out/gatehouse-efi.raw")" "$(du -h "$out/gatehouse-efi.raw" | cut -f1)"
fi
printf '  %-22s %s\n' sha256 "$(sha256sum "$raw" | cut -c1-16)"
