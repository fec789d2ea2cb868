#!/bin/sh
# The system test inside a Debian bookworm VM booted with systemd (xtask/src/system.rs).
# Boot 1 installs the package with apt and enables the service, then reboots; boot 2 checks the
# service as an operator uses it, then removes the package. Prints `JIT-SYSTEST ok NAME` or
# `JIT-SYSTEST FAIL NAME: WHY` per check and `JIT-SYSTEST-DONE` at the end, then powers off.
P=/run/systest
STATE=/var/lib/jit-systest
mkdir -p "$STATE"
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

ok() { echo "JIT-SYSTEST ok $1"; }
fail() { echo "JIT-SYSTEST FAIL $1: $2"; }
check() { # NAME COMMAND...: ok when COMMAND succeeds
    name=$1; shift
    if out=$("$@" 2>&1); then ok "$name"; else fail "$name" "$(echo "$out" | tail -n 5 | tr '\n' '|')"; fi
}
check_not() { # NAME COMMAND...: ok when COMMAND fails
    name=$1; shift
    if out=$("$@" 2>&1); then fail "$name" "succeeded: $(echo "$out" | tail -n 3 | tr '\n' '|')"; else ok "$name"; fi
}
finish() {
    echo "JIT-SYSTEST-DONE"
    sync
    systemctl poweroff --force --force
}
# Waits up to $1 seconds for COMMAND to succeed.
wait_for() {
    t=$1; shift
    while [ "$t" -gt 0 ]; do
        "$@" >/dev/null 2>&1 && return 0
        sleep 1; t=$((t - 1))
    done
    return 1
}
as_user() { u=$1; shift; setpriv --reuid="$u" --regid="$u" --init-groups -- "$@"; }
agent() { jitctl run --agent systest -- "$@"; }
CG=/sys/fs/cgroup/jit/systest
# Writes FILE from a process moved into the agent cgroup by hand (no daemon needed): exit 0 when
# the write succeeded, 1 when it failed, 100 when the process could not enter the cgroup.
write_in_cgroup() { sh -c "echo \$\$ > $CG/cgroup.procs || exit 100; echo x > $1 || exit 1; exit 0"; }
denied_in_cgroup() { write_in_cgroup "$1"; [ $? -eq 1 ]; }
allowed_in_cgroup() { write_in_cgroup "$1"; }
main_pid() { systemctl show -p MainPID --value jit-agent.service; }
# `bpftool prog show` ids of BPF LSM programs, but systemd's own (restrict_filesystems, loaded at
# boot when BPF LSM is active).
lsm_progs() {
    bpftool prog show | grep -v ' name restrict_filesy' | sed -n 's/^\([0-9]*\): lsm .*/\1/p' |
        tr '\n' ' '
}

echo "JIT-VM-BOOTED $(uname -r)"

if [ ! -e "$STATE/installed" ]; then
    echo "boot 1: install"
    mkdir -p /srv/denied /srv/held /srv/free
    check "no BPF LSM program but systemd's before the install" test -z "$(lsm_progs)"
    check "apt install ./jit_*.deb (offline)" sh -c "cd $P && apt-get install -y ./jit_*.deb"
    check "jit-reviewers group created" getent group jit-reviewers
    check "default config in /etc/jit" test -f /etc/jit/jit-agent.toml
    check "example policies installed disabled" sh -c \
        'ls /usr/share/jit/policies/coding-agent.toml && [ -z "$(ls /etc/jit/policies)" ]'
    check "man pages installed" sh -c 'test -f /usr/share/man/man8/jit-agent.8.gz && test -f /usr/share/man/man1/jitctl-status.1.gz'
    check "completions installed" test -s /usr/share/bash-completion/completions/jitctl
    check "tmpfiles made /run/jit" test -d /run/jit
    check "systemd-analyze verify jit-agent.service" sh -c \
        'out=$(systemd-analyze verify --man=no jit-agent.service 2>&1); echo "$out"; [ -z "$out" ]'
    check "not started before a policy is enabled" sh -c '! systemctl is-active --quiet jit-agent'
    useradd -m -G jit-reviewers reviewer
    useradd -m outsider
    cp "$P/systest.toml" /etc/jit/policies/systest.toml
    start=$(date +%s)
    check "systemctl enable --now jit-agent" systemctl enable --now jit-agent.service
    echo "JIT-SYSTEST-TIME first start $(( $(date +%s) - start ))s"
    check "active after enable --now" systemctl is-active jit-agent.service
    touch "$STATE/installed"
    sync
    echo "boot 1: rebooting"
    systemctl reboot
    exit 0
fi

echo "boot 2: checks"
# After=jit-agent.service: with Type=notify the daemon said READY before this runs.
check "active after boot" systemctl is-active jit-agent.service
check "READY=1 sent with the policy in the kernel" sh -c \
    'jitctl status | grep -q "policy generation [1-9].*systest.toml"'
progs=$(lsm_progs)
check "BPF LSM programs attached" test -n "$progs"
echo "jit's LSM programs: $(echo $progs | wc -w)"
check "pinned under /sys/fs/bpf/jit" test -d /sys/fs/bpf/jit
check "control socket root:jit-reviewers 0660" sh -c \
    '[ "$(stat -c "%U:%G %a" /run/jit/jit.sock)" = "root:jit-reviewers 660" ]'
check "jitctl status as a member of jit-reviewers" as_user reviewer jitctl status
check "jitctl status refused to a user outside jit-reviewers" sh -c \
    'out=$(setpriv --reuid=outsider --regid=outsider --init-groups -- jitctl status 2>&1); echo "$out"; echo "$out" | grep -q "Permission denied"'

check_not "enforced: agent write under /srv/denied" agent sh -c 'echo x > /srv/denied/a'
check "allowed: agent write under /srv/free" agent sh -c 'echo x > /srv/free/a'

# reload: a new rule applied by `systemctl reload` before it returns; a bad policy fails it.
check "before reload: /srv/free/b writable" agent sh -c 'echo x > /srv/free/b'
cat >>/etc/jit/policies/systest.toml <<'POL'

[[rule]]
name = "added by systemctl reload"
op = ["write", "create"]
path = ["/srv/free/b"]
decision = "deny"
POL
check "systemctl reload" systemctl reload jit-agent.service
check_not "after reload: /srv/free/b denied" agent sh -c 'echo x > /srv/free/b'
cp /etc/jit/policies/systest.toml "$STATE/good.toml"
echo 'this is = = not toml' > /etc/jit/policies/broken.toml
check_not "systemctl reload fails on a bad policy" systemctl reload jit-agent.service
check "the previous policy keeps enforcing" sh -c \
    '! jitctl run --agent systest -- sh -c "echo x > /srv/free/b"'
check "still active after the rejected reload" systemctl is-active jit-agent.service
rm /etc/jit/policies/broken.toml
check "systemctl reload after the fix" systemctl reload jit-agent.service

# restart: enforcement and a pending hold survive it.
agent touch /srv/held/h1 &
held=$!
if wait_for 60 sh -c 'jitctl pending --json | grep -q "/srv/held/h1"'; then ok "hold pending"; else fail "hold pending" "no pending hold for /srv/held/h1"; fi
hold_id=$(jitctl pending --json | sed -n 's/.*"id": *\([0-9]*\).*/\1/p' | head -n 1)
check "systemctl stop" systemctl stop jit-agent.service
check "enforced while the daemon is stopped" denied_in_cgroup /srv/denied/b
check "held process still stopped while the daemon is stopped" sh -c \
    "[ -e /proc/$held ] && [ ! -e /srv/held/h1 ]"
start=$(date +%s)
check "systemctl restart (from stopped)" systemctl start jit-agent.service
check "systemctl restart" systemctl restart jit-agent.service
echo "JIT-SYSTEST-TIME restart (adopting the pins) $(( $(date +%s) - start ))s"
check "the hold is still pending after restart" sh -c \
    "jitctl pending --json | grep -q '\"id\": *$hold_id\\b'"
check "enforced after restart" sh -c '! jitctl run --agent systest -- sh -c "echo x > /srv/denied/c"'
check "approve the hold kept across restarts" jitctl approve "$hold_id" --once
if wait "$held"; then ok "held action proceeds after approval"; else fail "held action proceeds after approval" "exit $?"; fi
check "held file created" test -e /srv/held/h1

# kill -9: systemd brings the daemon back.
old=$(main_pid)
kill -9 "$old"
start=$(date +%s)
if wait_for 300 sh -c "[ \"\$(systemctl show -p MainPID --value jit-agent)\" != 0 ] && [ \"\$(systemctl show -p MainPID --value jit-agent)\" != $old ] && systemctl is-active --quiet jit-agent"; then
    ok "back after kill -9"
else
    fail "back after kill -9" "$(systemctl status jit-agent 2>&1 | tail -n 5 | tr '\n' '|')"
fi
echo "JIT-SYSTEST-TIME back after kill -9 $(( $(date +%s) - start ))s"
check "jitctl status answers after kill -9" jitctl status
check_not "enforced after kill -9" agent sh -c 'echo x > /srv/denied/d'
check "enforced before apt remove (same probe as after)" denied_in_cgroup /srv/denied/after-remove

# apt remove: the service is stopped, the pins removed, no jit program stays attached.
check "apt remove jit" apt-get remove -y jit
check_not "service gone" systemctl is-active --quiet jit-agent.service
check_not "pins removed" test -e /sys/fs/bpf/jit
# The kernel frees unpinned programs after an RCU grace period: allow it a few seconds.
still_there() {
    left=""
    for id in $progs; do
        if bpftool prog show id "$id" >/dev/null 2>&1; then left="$left $id"; fi
    done
    [ -n "$left" ]
}
t=30
while still_there && [ $t -gt 0 ]; do sleep 1; t=$((t - 1)); done
check "no jit program attached after apt remove" sh -c \
    "[ -z '$left' ] || { for id in $left; do bpftool prog show id \$id; done; exit 1; }"
# The agent cgroup stays; a process in it is no longer decided by anything.
check "write under /srv/denied from the former agent cgroup" allowed_in_cgroup /srv/denied/after-remove
finish
