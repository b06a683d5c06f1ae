#!/usr/bin/env bash
# Runs a benchmark with this VM's free page reporting paused, and says how much
# memory the guest returned to the hypervisor while it ran.
#
# Why: this machine is a Firecracker guest whose virtio-balloon driver reports
# free pages to the host (/sys/module/page_reporting). Freed memory is taken
# back by the host a moment later, and the next use of that memory faults it in
# again on the host. A build writes ~550 MiB of new page cache per round; when
# the pages it gets were reported, the kernel spends 0.3-1.4 s more of `sys`
# on them (measured: `dd` of 512 MiB into a new file, 1.55 s sys on reported
# pages, 0.12 s after the same memory was touched once). A SHA-256 of a cached
# tar allocates nothing, so every write-heavy/hash ratio on this VM carries a
# random extra of up to 3x that a bare-metal or non-reporting VM never pays.
#
# What it does (root only, and only where the knob exists): raises
# page_reporting_order above the largest free block (11), so nothing is
# reported while CMD runs, touches TOUCH_MIB of memory once so that what the
# kernel hands out next is backed, runs CMD, restores the order. TOUCH_MIB
# defaults to 8192 (less if half the available memory or /dev/shm's free space
# is less): a round of bench/hivebuild on a 512 MiB layer writes ~1.3 GiB, and
# with 2048 its copy into the CIM took 0.24-0.34 s instead of 0.03 s in some
# rounds (pages touched for the first time; bench/README.md). Touching 8 GiB
# takes 7-25 s of sys here; TOUCH_MIB=2048 is quicker for small benchmarks.
# Elsewhere it runs CMD unchanged and says so.
#   bench/vm-pages.sh CMD [ARGS...]
#   e.g. SKIP_EXTRA=1 ROUNDS=7 bench/vm-pages.sh bench/cim-build.sh
set -euo pipefail
p=/sys/module/page_reporting/parameters
if [ ! -w "$p/page_reporting_order" ]; then
  echo "vm-pages: no writable $p/page_reporting_order (not this VM, or not root): running as is" >&2
  exec "$@"
fi
old=$(cat "$p/page_reporting_order")
restore() { echo "$old" > "$p/page_reporting_order"; }
trap restore EXIT
echo 11 > "$p/page_reporting_order"
before=$(cat "$p/reported_kib")
# Touch memory once: pages the host took back before now are faulted in here,
# not in the first timed round.
if [ -z "${TOUCH_MIB:-}" ]; then
  avail=$(awk '/^MemAvailable:/ {print int($2 / 2048)}' /proc/meminfo)
  shmfree=$(df --output=avail -m /dev/shm | tail -n1 | tr -d ' ')
  TOUCH_MIB=$(( avail < shmfree ? avail : shmfree ))
  TOUCH_MIB=$(( TOUCH_MIB < 8192 ? TOUCH_MIB : 8192 ))
fi
shm=$(mktemp /dev/shm/vm-pages.XXXXXX)
dd if=/dev/zero of="$shm" bs=1M count="$TOUCH_MIB" status=none
rm -f "$shm"
echo "vm-pages: free page reporting paused (page_reporting_order $old -> 11), $TOUCH_MIB MiB touched" >&2
rc=0
"$@" || rc=$?
after=$(cat "$p/reported_kib")
echo "vm-pages: memory returned to the host while it ran: $(( (after - before) / 1024 )) MiB" >&2
exit "$rc"
