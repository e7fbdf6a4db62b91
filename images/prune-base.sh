#!/usr/bin/env bash
# mmdebstrap customize hook: cuts the root at $1 down to an appliance. Runs inside the base
# build, so its result is cached with the base.
set -euo pipefail
root=${1:?root directory}

# Kernel modules: only storage (virtio, NVMe, AHCI/SATA, SCSI), common NICs (XDP-capable
# first), the file systems of the root and the config drive, and what those depend on.
keep=(
  kernel/arch kernel/crypto kernel/lib kernel/net
  kernel/fs/ext4 kernel/fs/jbd2 kernel/fs/mbcache.ko kernel/fs/fat kernel/fs/nls kernel/fs/isofs
  kernel/fs/overlayfs
  kernel/drivers/virtio kernel/drivers/block kernel/drivers/nvme kernel/drivers/ata
  kernel/drivers/scsi/sd_mod.ko kernel/drivers/scsi/sr_mod.ko kernel/drivers/scsi/virtio_scsi.ko
  kernel/drivers/scsi/scsi_common.ko kernel/drivers/scsi/scsi_mod.ko kernel/drivers/cdrom
  kernel/drivers/char/hw_random kernel/drivers/char/virtio_console.ko
  kernel/drivers/net/virtio_net.ko kernel/drivers/net/net_failover.ko kernel/drivers/net/veth.ko
  kernel/drivers/net/tun.ko kernel/drivers/net/macvlan.ko kernel/drivers/net/vxlan
  kernel/drivers/net/bonding kernel/drivers/net/mdio kernel/drivers/net/phy kernel/drivers/net/pcs
  kernel/drivers/net/ethernet/intel kernel/drivers/net/ethernet/mellanox
  kernel/drivers/net/ethernet/broadcom kernel/drivers/net/ethernet/realtek
  kernel/drivers/net/ethernet/amazon
  kernel/drivers/ptp kernel/drivers/pps kernel/drivers/dca kernel/drivers/i2c/algos
  kernel/drivers/pci kernel/drivers/infiniband kernel/drivers/vfio kernel/drivers/hid
)
for moddir in "$root"/lib/modules/*; do
  [ -d "$moddir/kernel" ] || continue
  kept=$(mktemp -d)
  for path in "${keep[@]}"; do
    if [ -e "$moddir/$path" ]; then
      mkdir -p "$kept/$(dirname "$path")"
      mv "$moddir/$path" "$kept/$path"
    fi
  done
  rm -rf "$moddir/kernel"
  mv "$kept/kernel" "$moddir/kernel"
  rmdir "$kept"
  # InfiniBand drivers other than the Mellanox core are not needed by a NIC.
  find "$moddir/kernel/drivers/infiniband/hw" -mindepth 1 -maxdepth 1 ! -name mlx5 -exec rm -rf {} + 2>/dev/null || true
  # Wireless, Bluetooth and the kernel's self-tests have no place on a wired appliance.
  rm -rf "$moddir"/kernel/net/{wireless,mac80211,bluetooth,nfc,6lowpan,ieee802154,mac802154} \
    "$moddir"/kernel/lib/test_*.ko
  chroot "$root" depmod "$(basename "$moddir")"
done

# No installed-from host identity: the machine ID is made at first boot (empty file).
: > "$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"
rm -rf "$root"/var/cache/apt/*.bin "$root"/var/lib/apt/lists/*
