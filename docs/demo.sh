#!/usr/bin/env bash
# The main job of cryo, end to end: run a container, checkpoint it, restore it and show that it
# continues where it stopped, with the same PIDs. Needs root; installs busybox-static if missing.
# Everything lives under $DEMO (default /tmp/cryo-demo) and is removed at the end (KEEP=1 keeps it).
set -euo pipefail
cd "$(dirname "$0")/.."
CRYO=${CRYO:-$PWD/bin/cryo}
DEMO=${DEMO:-/tmp/cryo-demo}
ID=cryo-demo-$$
B=$DEMO/bundle
IMG=$DEMO/checkpoint
S=("$CRYO" --root "$DEMO/state")

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*" | sed "s|$CRYO|cryo|; s|--root $DEMO/state ||" >&2; "$@"; }
counter() { cat "$B/rootfs/tmp/counter" 2>/dev/null || echo '?'; }

[ "$(id -u)" = 0 ] || { echo "demo: run as root (cryo makes namespaces and cgroups)" >&2; exit 1; }
if [ ! -x /bin/busybox ]; then
	apt-get update -qq && apt-get install -y -qq busybox-static >/dev/null
fi

cleanup() {
	"${S[@]}" delete --force "$ID" >/dev/null 2>&1 || true
	[ "${KEEP:-0}" = 1 ] && echo "kept $DEMO" || rm -rf "$DEMO"
}
trap cleanup EXIT
rm -rf "$DEMO"
mkdir -p "$B/rootfs"/{bin,proc,sys,dev,tmp,etc,root}
cp /bin/busybox "$B/rootfs/bin/busybox"
for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -s busybox "$B/rootfs/bin/$a"; done
echo 'root:x:0:0:root:/root:/bin/sh' >"$B/rootfs/etc/passwd"

# A runc-style default spec, with a writable root and a shell that counts five times a second.
(cd "$B" && "$CRYO" spec)
LOOP='i=0; while :; do i=$((i+1)); echo $i > /tmp/counter.new; mv /tmp/counter.new /tmp/counter; sleep 0.2; done'
sed -i -e 's/"terminal": true/"terminal": false/' -e 's/"readonly": true/"readonly": false/' \
	-e "s|^\(\s*\)\"sh\"\$|\1\"sh\", \"-c\", \"$LOOP\"|" "$B/config.json"

say "1. run a container: a busybox shell counting in /tmp/counter"
run "${S[@]}" run --detach --bundle "$B" "$ID" </dev/null >/dev/null
sleep 1.2
echo "counter: $(counter)"
run "${S[@]}" exec "$ID" ps -o pid,ppid,comm,args
echo "counter: $(counter)"

say "2. checkpoint it: the whole process tree goes into an OCI image layout, the container stops"
start=$(date +%s%N)
run "${S[@]}" checkpoint --image-path "$IMG" "$ID"
echo "checkpoint took $((($(date +%s%N) - start) / 1000000)) ms"
at=$(counter)
echo "counter at checkpoint: $at"
run "${S[@]}" list
sleep 1
echo "one second later the counter is still $(counter): nothing runs"
run "$CRYO" inspect "$IMG" | sed -n '1,20p'

say "3. restore it: fresh namespaces and cgroup, every process rebuilt with its PID"
start=$(date +%s%N)
run "${S[@]}" restore --detach --bundle "$B" --image-path "$IMG" "$ID" </dev/null >/dev/null
echo "restore took $((($(date +%s%N) - start) / 1000000)) ms"
run "${S[@]}" exec "$ID" ps -o pid,ppid,comm,args
for _ in 1 2 3 4 5; do
	sleep 0.3
	echo "counter: $(counter)"
done
now=$(counter)
if [ "$now" -gt "$at" ] && [ "$now" -lt $((at + 30)) ]; then
	say "the container continued from $at (now $now): restored, not restarted"
else
	echo "demo: the counter went from $at to $now: not a continuation" >&2
	exit 1
fi
