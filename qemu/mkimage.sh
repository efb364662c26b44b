#!/bin/bash
# Make the bootable artifacts of the test/demo node from a base rootfs
# (qemu/mkroot.sh): the live root with nodectl and our units, the Debian
# kernel, and an initramfs built by Debian's dracut with 90nodeboot.
#
#   qemu/mkimage.sh BASE_ROOTFS NODECTL OUT_DIR
#
# Writes OUT_DIR/vmlinuz, OUT_DIR/initrd.img, OUT_DIR/www/live.squashfs and
# OUT_DIR/www/live.squashfs.sha256 (sha256sum format). Needs root.
set -euo pipefail

base=${1:?usage: mkimage.sh BASE_ROOTFS NODECTL OUT_DIR}
nodectl=${2:?usage: mkimage.sh BASE_ROOTFS NODECTL OUT_DIR}
out=${3:?usage: mkimage.sh BASE_ROOTFS NODECTL OUT_DIR}
src=$(cd "$(dirname "$0")/.." && pwd)

[ -e "$base/.complete" ] || { echo "mkimage: $base is not a complete base rootfs" >&2; exit 1; }
[ -x "$nodectl" ] || { echo "mkimage: nodectl binary $nodectl missing" >&2; exit 1; }

root="$out/root"
mkdir -p "$out/www"
rm -rf "$root"
cp -a "$base" "$root"
rm -f "$root/.complete"

# nodectl and the units of the booted phase.
install -m 0755 "$nodectl" "$root/usr/bin/nodectl"
for unit in "$src"/systemd/*.service; do
    install -m 0644 "$unit" "$root/etc/systemd/system/"
    systemctl --root "$root" enable "$(basename "$unit")" >/dev/null
done
# A stateless node: the hostname comes from grendel.hostname (written by
# nodectl into the overlay), the machine id is made at each boot.
rm -f "$root/etc/hostname"
: > "$root/etc/machine-id"
# Root may log in on the serial console of the test VM (no password).
chroot "$root" passwd -d root >/dev/null

# The initramfs, built inside the image so kernel modules match.
kver=$(ls "$root/lib/modules" | sort -V | tail -n1)
rm -rf "$root/usr/lib/dracut/modules.d/90nodeboot"
cp -r "$src/dracut-module/90nodeboot" "$root/usr/lib/dracut/modules.d/90nodeboot"
cleanup() {
    for m in dev proc sys; do
        mountpoint -q "$root/$m" && umount -l "$root/$m"
    done
    return 0
}
trap cleanup EXIT
mount -t proc proc "$root/proc"
mount -t sysfs sys "$root/sys"
mount --bind /dev "$root/dev"
chroot "$root" dracut --quiet --force --no-hostonly --no-hostonly-cmdline \
    --no-early-microcode --compress zstd --add nodeboot \
    --omit "network network-legacy systemd-networkd network-manager dmsquash-live livenet nfs iscsi plymouth" \
    --kver "$kver" /boot/initrd-nodeboot.img
cleanup
trap - EXIT
mv "$root/boot/initrd-nodeboot.img" "$out/initrd.img"
cp "$root/boot/vmlinuz-$kver" "$out/vmlinuz"

# The live root: what the node mounts. /boot is not needed on a live node.
mksquashfs "$root" "$out/www/live.squashfs.tmp" -noappend -quiet -no-progress \
    -comp zstd -Xcompression-level 6 -wildcards \
    -e 'boot/*' 'var/cache/apt/*' 'var/lib/apt/lists/*' 'usr/share/doc/*' 'usr/share/man/*' \
    'lib/modules/*/kernel/drivers/gpu' 'lib/modules/*/kernel/sound' \
    'lib/modules/*/kernel/drivers/media' 'lib/modules/*/kernel/drivers/net/wireless' >&2
mv "$out/www/live.squashfs.tmp" "$out/www/live.squashfs"
(cd "$out/www" && sha256sum live.squashfs > live.squashfs.sha256.tmp && mv live.squashfs.sha256.tmp live.squashfs.sha256)
rm -rf "$root"
echo "mkimage: kernel $kver, $(stat -c %s "$out/initrd.img") bytes initrd, $(stat -c %s "$out/www/live.squashfs") bytes live image" >&2
