#!/usr/bin/env bash
# Issue 10 performance check: node time-to-ready of a 3-layer Windows image
# (default 400+100+100 MiB uncompressed) through a real containerd (started
# by the test, as in internal/snapshotter's tests), in one run:
#   fast path: containerd pull with the cimconv snapshotter (artifact blobs
#              downloaded and placed, no layer blob fetched)
#   import:    download every layer blob + decompress + portable CIM build
#              (the import path's work on this machine; the cimfs differ's
#              stand-in)
# Prints both times, fast/import (target <= 0.3) and bytes downloaded by each.
# Needs containerd 2.x on PATH (.ci/run installs it) and root.
#
# Usage: bench/node.sh [BASE_MB=400] [APP_MB=100]
set -euo pipefail
cd "$(dirname "$0")/.."
CIMCONV_BENCH_NODE=1 CIMCONV_BENCH_BASE_MB=${1:-400} CIMCONV_BENCH_APP_MB=${2:-100} \
  go test -count=1 -timeout 30m -run '^TestNodeBench$' ./internal/snapshotter/ -v 2>&1 |
  grep -v 'logger.go' | grep -E '^(node time|  |--- |ok|FAIL|panic)|e2e_|bench_'
