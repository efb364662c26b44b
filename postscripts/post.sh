#!/bin/sh
# post.sh: what node.toml cannot say. Run by `nodectl provision` after
# node.toml was applied and before the services start, as
#   sh post.sh HOSTNAME
# in this repository's checkout, under a timeout (nodeboot.post.timeout,
# default 600 s). A non-zero exit fails the boot's provisioning: nothing is
# swallowed, so keep `set -eu`.
set -eu
host=${1:?usage: post.sh HOSTNAME}

# Example: a message of the day naming the node.
printf 'Welcome to %s (provisioned by nodeboot)\n' "$host" > /etc/motd

# Secrets that should not live in git can come from bootd instead, sealed
# to this node's key (bootd serve --secrets DIR; DIR/<host>/munge.key), e.g.:
#   nodectl secret fetch munge.key --dest /etc/munge/munge.key --mode 0400 --owner munge
#   nodectl secret fetch sssd-bind.conf --dest /etc/sssd/conf.d/50-bind.conf --mode 0600
