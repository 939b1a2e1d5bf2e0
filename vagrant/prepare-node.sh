#!/bin/bash
# First boot of a pikube rehearsal VM: what cloud-init does on a freshly flashed Pi.
#
# Run by the Vagrantfile as root (Vagrant's shell provisioner, over Vagrant's own SSH
# connection), after the file provisioner has uploaded the node's pinned host keys.
#   prepare-node.sh USER AUTHORIZED_KEY
# - creates the cluster's SSH user with the cluster's public key and passwordless sudo
#   (as the `users:` section of the Pi's user-data does),
# - installs the host keys pikube created for this node and pinned in known_hosts, so the
#   first Ansible connection is verified (StrictHostKeyChecking=yes), never trusted blindly,
# - turns swap off for good (boxes ship a swap file; Pi images have none; kubelet refuses it).
# Idempotent: running it again changes nothing.
set -euo pipefail

user="${1:?usage: prepare-node.sh USER AUTHORIZED_KEY}"
authorized_key="${2:?usage: prepare-node.sh USER AUTHORIZED_KEY}"
# The file provisioner uploads as Vagrant's SSH user into its home directory.
upload_home="$(getent passwd "${SUDO_USER:-vagrant}" | cut -d: -f6)"
upload_dir="${upload_home}/.pikube"

# 1. The cluster's SSH user, its key, passwordless sudo.
if ! id -u "$user" >/dev/null 2>&1; then
    useradd --create-home --shell /bin/bash "$user"
fi
home="$(getent passwd "$user" | cut -d: -f6)"
install -d -m 0700 -o "$user" -g "$user" "$home/.ssh"
printf '%s\n' "$authorized_key" >"$home/.ssh/authorized_keys.pikube"
install -m 0600 -o "$user" -g "$user" "$home/.ssh/authorized_keys.pikube" "$home/.ssh/authorized_keys"
rm -f "$home/.ssh/authorized_keys.pikube"
sudoers="/etc/sudoers.d/90-pikube-$user"
printf '%s ALL=(ALL) NOPASSWD:ALL\n' "$user" >"$sudoers.tmp"
chmod 0440 "$sudoers.tmp"
visudo -cq -f "$sudoers.tmp"
mv "$sudoers.tmp" "$sudoers"

# 2. The pinned host keys (pikube created them; known_hosts already trusts exactly these).
reload=no
for uploaded_key in "$upload_dir"/ssh_host_*_key; do
    [ -f "$uploaded_key" ] || continue
    target="/etc/ssh/$(basename "$uploaded_key")"
    if ! cmp -s "$uploaded_key" "$target"; then
        install -m 0600 -o root -g root "$uploaded_key" "$target"
        ssh-keygen -y -f "$target" >"$target.pub"
        chmod 0644 "$target.pub"
        reload=yes
    fi
    rm -f "$uploaded_key"
done
rmdir "$upload_dir" 2>/dev/null || true
# A running sshd re-reads its host keys on reload; a socket-activated one at start.
if [ "$reload" = yes ]; then
    systemctl try-reload-or-restart ssh.service
fi

# 3. No swap, now and after reboots.
swapoff -a
sed -i -E 's@^([^#[:space:]]+[[:space:]]+[^[:space:]]+[[:space:]]+swap[[:space:]].*)$@# \1  # disabled by pikube@' /etc/fstab
systemctl mask --now swap.target >/dev/null 2>&1 || true
