#!/usr/bin/env bash
# Issue 11: hive merge speed and memory. Generates a SOFTWARE-sized base hive
# (default 100 MiB) and a delta (default 5 MiB) with bench/genhive, then, in
# the same run:
#   baseline: `converter hive check BASE` (reads and walks the whole base)
#   merge:    `converter hive merge --out OUT BASE DELTA`
# under GNU time, printing wall/CPU seconds, peak RSS and the merge/baseline
# ratios next to the targets (< 2 s, < 256 MiB peak RSS on an idle machine;
# merge/check <= 1.25 in wall and CPU time: a merge costs about one rewrite of
# the parent hive, issue 11's target as re-scoped on 2026-12-07).
# No thresholds are enforced: the machine is shared and noisy.
#   bench/hive.sh [BASE_MB] [DELTA_MB]
set -euo pipefail
cd "$(dirname "$0")/.."
base_mb="${1:-100}"; delta_mb="${2:-5}"
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
go build -o "$work/converter" ./cmd/converter
go run ./bench/genhive -mb "$base_mb" -delta-mb "$delta_mb" -out "$work"
measure() { # label, command...: prints "label wall cpu rssKiB"
  local label=$1; shift
  /usr/bin/time -f "%e %U %S %M" -o "$work/time" "$@" >/dev/null
  read -r wall user sys rss <"$work/time"
  echo "$label $wall $(echo "$user + $sys" | bc) $rss"
}
b=$(measure baseline "$work/converter" hive check "$work/SOFTWARE")
m=$(measure merge "$work/converter" hive merge --out "$work/merged" "$work/SOFTWARE" "$work/Software_Delta")
"$work/converter" hive check "$work/merged" >/dev/null
read -r _ bw bc br <<<"$b"; read -r _ mw mc mr <<<"$m"
printf '%-28s %8s %8s %10s\n' "" "wall s" "cpu s" "peak MiB"
printf '%-28s %8s %8s %10d\n' "hive check (baseline)" "$bw" "$bc" $((br / 1024))
printf '%-28s %8s %8s %10d\n' "hive merge" "$mw" "$mc" $((mr / 1024))
echo "merge/baseline: wall $(echo "scale=2; $mw / $bw" | bc)x, cpu $(echo "scale=2; $mc / $bc" | bc)x, rss $(echo "scale=2; $mr / $br" | bc)x"
echo "targets: merge < 2 s wall and < 256 MiB peak RSS; merge/baseline <= 1.25 wall and cpu (load now: $(cut -d' ' -f1-3 /proc/loadavg))"
