#!/usr/bin/env bash
# mmdebstrap setup hook: before the kernel is installed, tell initramfs-tools to build one small
# zstd initramfs with only the drivers that find the root (virtio, NVMe, AHCI/SATA, SCSI) and
# ext4, instead of every module the stock kernel has.
set -euo pipefail
root=${1:?root directory}
mkdir -p "$root/etc/initramfs-tools/conf.d" "$root/usr/share/initramfs-tools/modules.d"
printf 'MODULES=list\nCOMPRESS=zstd\n' > "$root/etc/initramfs-tools/conf.d/gatehouse.conf"
printf '%s\n' virtio_pci virtio_blk virtio_scsi nvme ahci ata_piix sd_mod sr_mod ext4 crc32c_generic \
  > "$root/usr/share/initramfs-tools/modules.d/gatehouse"
