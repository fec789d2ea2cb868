#!/bin/sh
# mmdebstrap --customize-hook for the system test's image (xtask/src/system.rs); $1 is the root.
# Part of the image's recipe: changing this file builds a new image.
set -e
root=$1
echo jit-systest > "$root/etc/hostname"
# The initramfs mounts the root read-write; no fstab entry, so no wait for a device unit
# (there is no udev in the image).
: > "$root/etc/fstab"
# Nothing may take the dpkg lock or the CPU behind the test's back.
chroot "$root" systemctl mask apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer \
    e2scrub_all.timer fstrim.timer systemd-tmpfiles-clean.timer getty@tty1.service >/dev/null 2>&1 || true
cat > "$root/usr/local/sbin/jit-systest" <<'SH'
#!/bin/sh
# Runs the test that xtask put on the second disk (a tar archive), output on ttyS1.
mkdir -p /run/systest
tar -xf /dev/vdb -C /run/systest
exec /bin/sh /run/systest/systest.sh >/dev/ttyS1 2>&1
SH
chmod 0755 "$root/usr/local/sbin/jit-systest"
cat > "$root/etc/systemd/system/jit-systest.service" <<'UNIT'
[Unit]
Description=jit system test (cargo xtask test --system)
After=basic.target jit-agent.service

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/jit-systest
TimeoutStartSec=infinity
StandardInput=null

[Install]
WantedBy=multi-user.target
UNIT
chroot "$root" systemctl enable jit-systest.service >/dev/null 2>&1
