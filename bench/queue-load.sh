#!/usr/bin/env bash
# queue-load.sh: N conversion requests through the real queue path (embedded
# NATS JetStream, file store; submit -> worker -> ack -> status -> result
# event) with a stand-in converter that sleeps WORK per request. Prints
# conversions/s, p50/p99 end-to-end latency (submit to result, queueing
# included: all N are submitted at once) and the share of worker slot time
# spent outside the converter.
#
# Usage: bench/queue-load.sh [N=500] [WORK=10ms] [CONCURRENCY=2]
# For the real builder, call worker.RunLoad with the real Converter.
set -euo pipefail
cd "$(dirname "$0")/.."
export CIMCONV_LOAD_N="${1:-500}" CIMCONV_LOAD_WORK="${2:-10ms}" CIMCONV_LOAD_CONCURRENCY="${3:-2}"
go test -run '^$' -bench '^BenchmarkQueueLoad$' -benchtime 1x -count 1 ./internal/worker/ | grep -E '^(queue-load|BenchmarkQueueLoad)'
