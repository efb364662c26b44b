#!/bin/bash
# dracut module 90nodeboot: fetch the live root with nodectl and mount /sysroot.
# Variables such as moddir, initdir, systemdsystemunitdir come from dracut.
# shellcheck disable=SC2154
#
# Install: copy this directory to /usr/lib/dracut/modules.d/90nodeboot and run
#   dracut --no-hostonly --add nodeboot …
# The static nodectl is taken from $NODECTL (default /usr/bin/nodectl).
# nodectl brings up the boot NIC itself (rtnetlink + its own DHCP client),
# so the module does not depend on dracut's "network" modules.

# Only when asked for (--add nodeboot).
check() {
    return 255
}

depends() {
    echo systemd
}

# Ethernet drivers (Debian ships dracut's kernel-network-modules in the
# separate dracut-network package, which would also pull DHCP clients we do
# not use), plus what the live root needs.
installkernel() {
    hostonly='' instmods '=drivers/net/ethernet' virtio_net af_packet
    instmods squashfs loop overlay
    # The live image cache partition (nodectl format-disk --cache-partition):
    # ext4, mounted by nodectl itself (mount(2), no mount binary needed), on
    # whichever disk the node has.
    instmods ext4 crc32c
    hostonly='' instmods '=drivers/block' '=drivers/nvme' '=drivers/scsi' '=drivers/ata' virtio_blk virtio_scsi sd_mod nvme ahci
}

install() {
    local nodectl=${NODECTL:-/usr/bin/nodectl}
    if [[ ! -x $nodectl ]]; then
        dfatal "90nodeboot: the nodectl binary $nodectl is missing or not executable"
        exit 1
    fi
    inst_simple "$nodectl" /usr/bin/nodectl || exit 1
    inst_simple "$moddir/nodectl-live.service" "$systemdsystemunitdir/nodectl-live.service" || exit 1
    inst_script "$moddir/nodeboot-generator.sh" "$systemdutildir/system-generators/nodeboot-generator" || exit 1
    # The one hook: dracut-cmdline.sh refuses a root= type no module claims.
    inst_hook cmdline 90 "$moddir/parse-nodeboot.sh"
    inst_multiple -o losetup
    # A node key sealed in the TPM (nodectl identity): tpm2-tools, when the
    # image has them, and the device TCTI they load at run time, so the
    # initrd signs its status reports too.
    # (wipefs: nodectl checks the key partition's filesystem before mounting it.)
    inst_multiple -o wipefs tpm2_createprimary tpm2_load tpm2_unseal tpm2_flushcontext
    inst_libdir_file "libtss2-tcti-device.so*"
    $SYSTEMCTL -q --root "$initdir" add-requires initrd-root-fs.target nodectl-live.service || exit 1
}
