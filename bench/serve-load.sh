#!/usr/bin/env bash
# Issue 4 performance check: N tiny generated Windows images converted
# through the real service path: service.Start (embedded NATS JetStream,
# worker, HTTP) with the real conversion (convert + portable builder,
# pulling from and pushing to a loopback registry). All N requests are
# submitted at once. Prints conversions/s, p50/p99 end-to-end latency
# (submit to result event, queueing included) and the share of worker slot
# time spent outside the converter (queue + service; target < 10%) and
# outside its build stage (fetch + decompress + CIM build).
# Ratios and shares, not wall-clock thresholds: this machine is noisy.
#
# Usage: bench/serve-load.sh [N=500] [CONCURRENCY=2]
set -euo pipefail
cd "$(dirname "$0")/.."
go run ./bench/serveload -n "${1:-500}" -concurrency "${2:-2}"
