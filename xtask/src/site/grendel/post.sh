#!/bin/sh
# post.sh of the site's postscripts repository on the Grendel path, after
# deepsquare-io/postscripts: copy the files into place (rsync), fix modes,
# then run the scripts under postscripts/. Run by the image postscript from
# the clone as `./post.sh HOSTNAME`.

# RUN wraps the command to log into journalctl
RUN() {
  logger -t postscripts "Running $*..."
  echo "---Running $*...---"
  "$@"
  code=$?
  logger -t postscripts "$* exited with code $code"
  echo "---$* exited with code $code---"
  return "$code"
}

COPY() {
  mkdir -p "$(dirname "$2")"
  rsync -av "$1" "$2"
}

SCRIPTPATH=$(dirname "$(realpath "$0")")

# -- SYNCLIST
cd "${SCRIPTPATH}/files" || exit 1
COPY ./sssd/sssd.conf /etc/sssd/sssd.conf

COPY ./ssh/ /etc/ssh/
find /etc/ssh -type f -name 'ssh_host_*_key' -exec chmod 600 {} \;
find /etc/ssh -type f -name 'ssh_host_*_key.pub' -exec chmod 644 {} \;

COPY ./munge/munge.key /etc/munge/munge.key

COPY ./slurm/slurmd_defaults /etc/default/slurmd
COPY ./slurm/slurmd-configless.conf /etc/systemd/system/slurmd.service.d/configless.conf

# Debian's update-ca-trust (the seed's images are EL).
COPY ./certs/private-ca.pem /usr/local/share/ca-certificates/private-ca.crt
update-ca-certificates

COPY ./hosts /etc/hosts

# -- APPEND
mkdir -p /root/.ssh
cat ./root_authorized_keys >>/root/.ssh/authorized_keys
chmod 600 /root/.ssh/*
chmod 700 /root/.ssh

# Restore context
cd "${SCRIPTPATH}" || exit 1

# -- EXECUTE (use RUN to log your postscripts)
PATH="${SCRIPTPATH}/postscripts:$PATH"
chmod +x "${SCRIPTPATH}/postscripts/"*

RUN ldap
RUN fs_mount
RUN slurm
RUN set-motd "$1"
