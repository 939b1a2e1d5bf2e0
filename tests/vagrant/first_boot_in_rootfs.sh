#!/bin/bash
# Run vagrant/prepare-node.sh in a throwaway copy of a Debian root filesystem, the way
# the Vagrantfile runs it in a fresh VM, then log in over real SSH with the pinned key.
#
#   unshare --mount --pid --fork --kill-child \
#       first_boot_in_rootfs.sh ROOTFS WORK HOST_KEY_DIR USER AUTHORIZED_KEY PORT
#
# Run inside `unshare --mount --pid`: the overlay, /dev and /proc mounts and the sshd
# die with the namespace, so nothing is left behind even on failure. The node's rootfs
# is an overlay (ROOTFS read-only, changes in WORK); results land in WORK/out/.
# swapoff is replaced in the overlay by a stand-in that records its call: the real one
# would act on the host's swap (swap is not per namespace); see swapoff(8).
set -euo pipefail

rootfs="$1" work="$2" host_key_dir="$3" user="$4" authorized_key="$5" port="$6"
root="$work/merged"
out="$work/out"
mkdir -p "$work/upper" "$work/overlay-work" "$root" "$out"
mount -t overlay overlay \
    -o "lowerdir=$rootfs,upperdir=$work/upper,workdir=$work/overlay-work" "$root"
mount --rbind /dev "$root/dev"
mount -t proc proc "$root/proc"
mkdir -p "$root/run/sshd"

# A box as Vagrant finds it: a "vagrant" user, a swap line in fstab.
chroot "$root" useradd --create-home --shell /bin/bash vagrant 2>/dev/null || true
echo "/swap.img none swap sw 0 0" >>"$root/etc/fstab"
cat >"$root/usr/sbin/swapoff" <<'STANDIN'
#!/bin/sh
echo "swapoff $*" >>/var/log/swapoff-calls
STANDIN
chmod 0755 "$root/usr/sbin/swapoff"

first_boot() {
    # What Vagrant does: the file provisioner uploads each host key into the SSH user's
    # home, the shell provisioner runs the script as root via `sudo -E -H`.
    for key in "$host_key_dir"/ssh_host_*_key; do
        install -D -m 0644 "$key" "$root/home/vagrant/.pikube/$(basename "$key")"
    done
    cp "$(dirname "$0")/../../vagrant/prepare-node.sh" "$root/tmp/vagrant-shell"
    chroot "$root" env SUDO_USER=vagrant /bin/bash /tmp/vagrant-shell "$user" "$authorized_key"
}

snapshot() {
    (cd "$root" && sha256sum etc/passwd etc/fstab etc/ssh/ssh_host_ed25519_key \
        etc/ssh/ssh_host_ecdsa_key \
        "etc/sudoers.d/90-pikube-$user" "home/$user/.ssh/authorized_keys")
}

first_boot
snapshot >"$out/first.sha256"
first_boot
snapshot >"$out/second.sha256"

chroot "$root" stat -c '%n %a %U' /etc/ssh/ssh_host_ed25519_key /etc/ssh/ssh_host_ecdsa_key \
    "/home/$user/.ssh" \
    "/home/$user/.ssh/authorized_keys" "/etc/sudoers.d/90-pikube-$user" >"$out/modes"
cp "$root/etc/fstab" "$out/fstab"
cp "$root/var/log/swapoff-calls" "$out/swapoff-calls"
test -e "$root/home/vagrant/.pikube" && echo present >"$out/upload" \
    || echo removed >"$out/upload"

# The node's real sshd, on loopback only.
chroot "$root" /usr/sbin/sshd -D -e -p "$port" -o ListenAddress=127.0.0.1 \
    2>"$out/sshd.log" &
for _ in $(seq 50); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
    sleep 0.1
done
touch "$out/ready"
# The test logs in from here (same network namespace) and then drops $work/done.
for _ in $(seq 1200); do
    [ -e "$work/done" ] && exit 0
    sleep 0.1
done
echo "timed out waiting for the test" >&2
exit 1
