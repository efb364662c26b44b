#!/bin/bash
# Build (or reuse) the base root filesystem of the test/demo node:
# Debian bookworm via debootstrap, systemd, a Debian kernel and dracut.
#
#   qemu/mkroot.sh CACHE_DIR      → prints the path of the ready base rootfs
#
# The tree is cached under CACHE_DIR/rootfs-<key>, where <key> hashes this
# script, so a rerun on the same machine is instant; downloaded .debs are kept
# in CACHE_DIR/debs. Needs root, debootstrap and network access to Debian's
# package mirror configured on this machine.
set -euo pipefail

cache=${1:?usage: mkroot.sh CACHE_DIR}
suite=bookworm
# Packages of the live root. The kernel and dracut are there so that the
# initramfs is built against exactly the modules the image carries.
include=systemd,systemd-sysv,udev,kmod,dbus,iproute2,procps,iputils-ping,less,ca-certificates,zstd
extra=(linux-image-amd64 dracut dracut-core)

key=$( { cat "$0"; echo "$suite $include ${extra[*]}"; } | sha256sum | cut -c1-16)
root="$cache/rootfs-$key"
if [ -e "$root/.complete" ]; then
    echo "$root"
    exit 0
fi

mkdir -p "$cache/debs"
tmp="$root.tmp"
rm -rf "$tmp"
mirror=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n1)
[ -n "$mirror" ] || mirror=$(awk '$1=="deb" {print $2; exit}' /etc/apt/sources.list 2>/dev/null)
[ -n "$mirror" ] || { echo "mkroot: cannot find this machine's Debian mirror in /etc/apt" >&2; exit 1; }

echo "mkroot: debootstrap $suite into $tmp (mirror from /etc/apt)" >&2
debootstrap --variant=minbase --include="$include" --cache-dir="$cache/debs" \
    "$suite" "$tmp" "$mirror" >&2

cleanup() {
    for m in dev/pts dev proc sys; do
        mountpoint -q "$tmp/$m" && umount -l "$tmp/$m"
    done
    return 0
}
trap cleanup EXIT
mount -t proc proc "$tmp/proc"
mount -t sysfs sys "$tmp/sys"
mount --bind /dev "$tmp/dev"

# Keep downloaded packages across runs: bind the deb cache into the chroot.
mkdir -p "$tmp/var/cache/apt/archives"
cp -n "$cache"/debs/*.deb "$tmp/var/cache/apt/archives/" 2>/dev/null || true
echo "mkroot: installing ${extra[*]}" >&2
chroot "$tmp" env DEBIAN_FRONTEND=noninteractive INITRD=No \
    apt-get install -y -q --no-install-recommends "${extra[@]}" >&2
cp -n "$tmp"/var/cache/apt/archives/*.deb "$cache/debs/" 2>/dev/null || true
chroot "$tmp" apt-get clean
# The image builder runs dracut itself; drop the initrd the kernel hook may have made.
rm -f "$tmp"/boot/initrd.img-*
cleanup
trap - EXIT

touch "$tmp/.complete"
rm -rf "$root"
mv "$tmp" "$root"
# Older trees (other keys) are stale: keep the cache to one tree.
for old in "$cache"/rootfs-*; do
    [ "$old" = "$root" ] || [ "$old" = "$tmp" ] || rm -rf "$old"
done
echo "$root"
