#!/usr/bin/env bash
# Issue 2 performance check: the portable CIM builder against baselines
# measured in the same run on the same generated layer (this machine is
# noisy, so only ratios are reported):
#   1. uncompressed layer: `converter cim build` vs GNU `tar -xf` into an empty dir
#   2. gzip layer:         `converter cim build` vs `gzip -dc > /dev/null`
#   3. 200,000 files in one directory: time and peak RSS
#   4. (BIG=1) a 4 GiB layer streamed from a pipe: peak RSS
# Usage: bench/cim-build.sh [FILES] [BYTES]     (defaults 20000 files, 512 MiB)
set -euo pipefail
cd "$(dirname "$0")/.."
files=${1:-20000}
bytes=${2:-$((512 << 20))}
work=$(mktemp -d "${TMPDIR:-/tmp}/cimconv-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT
go build -o "$work/converter" ./cmd/converter
conv="$work/converter"

# run LABEL CMD...: runs CMD under GNU time; sets SECS and RSS_KB.
run() {
  local label=$1; shift
  /usr/bin/time -f "%e %M" -o "$work/time" "$@" >/dev/null 2>"$work/stderr" || { cat "$work/stderr"; return 1; }
  read -r SECS RSS_KB < "$work/time"
  printf '  %-28s %8.2fs  peak RSS %6d MiB\n' "$label" "$SECS" $((RSS_KB / 1024))
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b <= 0) b = 0.01; printf "%.2f", a / b }'; }

echo "generating a $files-file, $((bytes >> 20)) MiB layer"
"$conv" dev large-layer --files "$files" --size "$bytes" "$work/layer.tar"
gzip -1 -c "$work/layer.tar" > "$work/layer.tar.gz"
sync

echo "1. uncompressed layer ($(du -m "$work/layer.tar" | cut -f1) MiB)"
mkdir "$work/x"
run "tar -xf" tar --warning=no-unknown-keyword -xf "$work/layer.tar" -C "$work/x"
tar_s=$SECS
run "converter cim build" "$conv" cim build --out "$work/c1" "$work/layer.tar"
build_s=$SECS; build_rss=$RSS_KB
rm -rf "$work/x" "$work/c1"
echo "  ratio build/tar-x = $(ratio "$build_s" "$tar_s")   (target <= 0.5)"

echo "2. gzip layer ($(du -m "$work/layer.tar.gz" | cut -f1) MiB)"
run "gzip -dc > /dev/null" sh -c "gzip -dc '$work/layer.tar.gz' > /dev/null"
gz_s=$SECS
run "converter cim build (gzip)" "$conv" cim build --out "$work/c2" "$work/layer.tar.gz"
echo "  ratio build/gzip-dc = $(ratio "$SECS" "$gz_s")   (target <= 1.1)"
rm -rf "$work/c2" "$work/layer.tar.gz"

flat=${FLAT_FILES:-200000}
echo "3. $flat files in one directory"
"$conv" dev large-layer --flat --files "$flat" "$work/flat.tar"
run "converter cim build (flat)" "$conv" cim build --out "$work/c3" "$work/flat.tar"
echo "  $flat files in one dir: ${SECS}s, peak RSS $((RSS_KB / 1024)) MiB   (target < 120s, < 512 MiB)"
rm -rf "$work/c3" "$work/flat.tar"

if [ "${BIG:-0}" = 1 ]; then
  echo "4. 4 GiB layer from a pipe"
  mkfifo "$work/big.fifo"
  "$conv" dev large-layer --files 40000 --size $((4 << 30)) - > "$work/big.fifo" &
  run "converter cim build (4 GiB)" "$conv" cim build --out "$work/c4" "$work/big.fifo"
  wait
  echo "  4 GiB layer: ${SECS}s, peak RSS $((RSS_KB / 1024)) MiB   (target < 256 MiB)"
fi
echo "uncompressed build peak RSS: $((build_rss / 1024)) MiB"
