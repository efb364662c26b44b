#!/bin/sh
# The image postscript of the Grendel path (`cargo xtask e2e slurm-grendel`),
# served by bootd at {grendel.address}/repo/postscript.sh and run by the node
# as `sh postscript.sh HOSTNAME`: the seed compute-plane-network-boot.txt's,
# with only the test site's device and repository put in (xtask fills in the
# @…@ words).
set -ex
# Fetch deploy key
mkdir -p /secret
# The seed: `mount /dev/nvme0n1 /secret`, the disk holding the key. Here the
# key partition `nodectl format-disk --key-partition` made, once udev named it.
key_dev=/dev/disk/by-partlabel/nodeboot-key
i=0
while [ ! -e "$key_dev" ] && [ "$i" -lt 30 ]; do
  sleep 1
  i=$((i + 1))
done
mount "$key_dev" /secret
# Cloning git repo containing postscripts.
mkdir -p /configs
GIT_SSH_COMMAND='ssh -i /secret/key -o IdentitiesOnly=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null' git clone @GIT_URL@ /configs
echo "grendel-milestone cloned"
if [ -f /configs/post.sh ] && [ -x /configs/post.sh ]; then
  cd /configs || exit 1
  ./post.sh "$1"
fi
# Security
chmod -R g-rwx,o-rwx .
umount -f /secret
echo "grendel-milestone postscript-done"
