#!/usr/bin/env bash
# Issue 3 performance check: `converter convert` of a generated 3-layer
# Windows image from a loopback registry against a baseline measured in the
# same run on the same blobs (this machine is noisy, so only ratios count):
#   baseline, per layer: curl the blob from the registry | gzip -dc | tar -x
#                        into an empty dir (one streaming pipeline), summed
#   convert:             converter convert IMAGE (portable builder, fresh
#                        cache and work dirs; includes pushing the artifact)
# Prints convert/baseline (target <= 1.0), convert/largest-layer (target:
# closer to the largest layer than to the sum) and the converter's peak RSS.
#
# Usage: [ROUNDS=2] bench/convert.sh [BASE_FILES=8000] [BASE_MB=256] [APP_FILES=2000] [APP_MB=64]
# Baseline and convert alternate for ROUNDS rounds; the best time of each
# (per layer for the baseline) is compared, the highest peak RSS reported.
# Layers are compressed with gzip -1 (setup speed); decompression cost is
# much the same at every level.
set -euo pipefail
cd "$(dirname "$0")/.."
base_files=${1:-8000}
base_mb=${2:-256}
app_files=${3:-2000}
app_mb=${4:-64}
rounds=${ROUNDS:-2}
work=$(mktemp -d "${TMPDIR:-/tmp}/cimconv-convert-bench.XXXXXX")
reg_pid=
cleanup() {
  if [ -n "$reg_pid" ]; then kill "$reg_pid" 2>/dev/null || true; wait "$reg_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

go build -o "$work/converter" ./cmd/converter
go build -o "$work/pushimage" ./bench/pushimage
conv="$work/converter"

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b <= 0) b = 0.01; printf "%.2f", a / b }'; }

echo "generating layers: base $base_files files/$base_mb MiB, 2 x app $app_files files/$app_mb MiB (gzip -1)"
"$conv" dev large-layer --seed 1 --files "$base_files" --size $((base_mb << 20)) - | gzip -1 > "$work/l0.tar.gz"
"$conv" dev large-layer --seed 2 --files "$app_files" --size $((app_mb << 20)) - | gzip -1 > "$work/l1.tar.gz"
"$conv" dev large-layer --seed 3 --files "$app_files" --size $((app_mb << 20)) - | gzip -1 > "$work/l2.tar.gz"

mkdir "$work/blobs"
"$conv" dev registry --addr 127.0.0.1:0 --dir "$work/blobs" --json > "$work/registry.json" 2> "$work/registry.err" &
reg_pid=$!
for _ in $(seq 100); do [ -s "$work/registry.json" ] && break; sleep 0.1; done
[ -s "$work/registry.json" ] || { echo "dev registry did not start:"; cat "$work/registry.err"; exit 1; }
host=$(sed -n 's/.*"registry":"\([^"]*\)".*/\1/p' "$work/registry.json")
"$work/pushimage" -ref "$host/bench/big:latest" "$work/l0.tar.gz" "$work/l1.tar.gz" "$work/l2.tar.gz" > "$work/pushed"
image=$(head -1 "$work/pushed")
mapfile -t digests < <(tail -n +2 "$work/pushed")
rm -f "$work"/l?.tar.gz
sync
echo "image $image"

min() { awk -v a="$1" -v b="$2" 'BEGIN { print (a == "" || b < a) ? b : a }'; }
maxn() { awk -v a="$1" -v b="$2" 'BEGIN { print (a == "" || b > a) ? b : a }'; }
declare -a layer_s=()
conv_s=; conv_rss=0
for round in $(seq "$rounds"); do
  echo "round $round/$rounds"
  echo "  baseline: curl | gzip -dc | tar -x, per layer"
  for i in "${!digests[@]}"; do
    d=${digests[$i]}
    mkdir "$work/x$i"
    t0=$(now)
    curl -fsS "http://$host/v2/bench/big/blobs/$d" | gzip -dc | tar --warning=no-unknown-keyword -x -C "$work/x$i"
    t=$(elapsed "$t0" "$(now)")
    size=$(curl -fsSI "http://$host/v2/bench/big/blobs/$d" | tr -d '\r' | awk 'tolower($1) == "content-length:" { print $2 }')
    printf '    layer %d %-19s %4d MiB gzip  %8ss\n' "$i" "${d:0:19}" $((size >> 20)) "$t"
    layer_s[i]=$(min "${layer_s[i]:-}" "$t")
  done
  rm -rf "$work"/x?
  sync

  rm -rf "$work/cache" "$work/wd"
  /usr/bin/time -f "%e %M" -o "$work/time" "$conv" convert "$image" --builder portable --force \
    --cache-dir "$work/cache" --work-dir "$work/wd" --log-level warn > "$work/convert.out" 2> "$work/convert.err" \
    || { cat "$work/convert.err"; exit 1; }
  read -r t rss < "$work/time"
  grep -q "${#digests[@]}/${#digests[@]} layers built" "$work/convert.out" \
    || { cat "$work/convert.out"; echo "convert did not build all ${#digests[@]} layers: no comparison"; exit 1; }
  printf '  converter convert (portable, fresh cache) %8ss  peak RSS %d MiB  (%s)\n' "$t" $((rss / 1024)) "$(awk '{ print $(NF-2), $(NF-1), $NF }' "$work/convert.out" | head -1)"
  conv_s=$(min "$conv_s" "$t")
  conv_rss=$(maxn "$conv_rss" "$rss")
  sync
done

base_sum=0; base_max=0
for t in "${layer_s[@]}"; do
  base_sum=$(awk -v a="$base_sum" -v b="$t" 'BEGIN { printf "%.2f", a + b }')
  base_max=$(maxn "$base_max" "$t")
done
echo "best of $rounds: baseline sum ${base_sum}s, largest layer ${base_max}s; convert ${conv_s}s"
echo "convert/baseline-sum = $(ratio "$conv_s" "$base_sum") (target <= 1.0); convert/largest-layer = $(ratio "$conv_s" "$base_max") (sum/largest = $(ratio "$base_sum" "$base_max"); target: closer to 1 than to that); peak RSS $((conv_rss / 1024)) MiB"
