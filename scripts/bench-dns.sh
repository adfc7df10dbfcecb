#!/usr/bin/env bash
# DNS throughput of anycast-resolver under dnsperf, on loopback, against a
# plain hickory-server authoritative answer as the baseline.
#
#   scripts/bench-dns.sh                 # 10 s per measurement
#   DURATION=30 scripts/bench-dns.sh     # longer
#   nice -n -10 scripts/bench-dns.sh     # on a machine other work shares
#
# Measures, each for DURATION seconds with the same dnsperf load (as fast as
# the server answers, then at a fixed RATE for the latency of an unsaturated
# server):
#   adn        web.any.example.net A        answered by the resolver (metric rt)
#   static     cost.web.any.example.net A   answered by the resolver (a static metric)
#   forwarded  www.bench.example A          forwarded by the resolver, from its cache
#   baseline   www.bench.example A          hickory's Catalog over an in-memory zone
#                                           (`anycast-lab baseline-dns`), asked directly
# The baseline server is also the resolver's upstream, so the forwarded name
# is answered from the resolver's cache after the first query.
#
# Installs dnsperf with apt-get if it is missing (Debian package dnsperf).
# Everything runs on 127.0.0.1; the script stops what it started on exit.
# Prints a Markdown table: saturated queries per second with the mean latency
# at that load, then the mean and the maximum latency at RATE.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

DURATION=${DURATION:-10}
# dnsperf: simulated clients, threads, queries in flight.
CLIENTS=${CLIENTS:-8}
THREADS=${THREADS:-1}
INFLIGHT=${INFLIGHT:-100}
# Queries per second of the unsaturated (latency) measurement.
RATE=${RATE:-5000}

need_command dnsperf

cargo build --release -j2 -q -p anycast-resolver -p anycast-lab
bin=target/release

start_work
start_bg "$bin/anycast-lab" baseline-dns --listen 127.0.0.1:0 2>"$work/baseline.log"
baseline=$(listening "$work/baseline.log" dns-udp)

start_bench_resolver "$baseline"

# dnsperf against ADDR for NAME (extra dnsperf arguments after it); prints
# "qps mean_s max_s lost".
measure() {
    local addr=$1 name=$2 out="$work/dnsperf.out"
    shift 2
    echo "$name A" >"$work/queries"
    dnsperf -s "${addr%:*}" -p "${addr##*:}" -d "$work/queries" -l "$DURATION" \
        -c "$CLIENTS" -T "$THREADS" -q "$INFLIGHT" "$@" >"$out" 2>&1 || {
        cat "$out" >&2
        return 1
    }
    dnsperf_fields "$out" qps mean max lost
}

# Warm the forwarding cache.
dnsperf -s 127.0.0.1 -p "${resolver##*:}" -d <(echo "www.bench.example A") -n 1 >/dev/null 2>&1 || true

echo "dnsperf: $CLIENTS clients, $THREADS thread(s), $INFLIGHT in flight, ${DURATION} s each; $(nproc) cores" >&2
printf '| what | name | queries/s (saturated) | mean latency there | mean latency at %s/s | max latency at %s/s | lost |\n' "$RATE" "$RATE"
printf '|---|---|---|---|---|---|---|\n'
row() {
    local what=$1 addr=$2 name=$3
    read -r qps mean _ lost < <(measure "$addr" "$name")
    read -r _ rmean rmax rlost < <(measure "$addr" "$name" -Q "$RATE")
    awk -v w="$what" -v n="$name" -v q="$qps" -v m="$mean" -v rm="$rmean" -v rx="$rmax" \
        -v l="$((lost + rlost))" \
        'BEGIN { printf "| %s | `%s` | %.0f | %.3f ms | %.3f ms | %.2f ms | %s |\n", w, n, q, m * 1000, rm * 1000, rx * 1000, l }'
}
row "anycast name (rt)" "$resolver" web.any.example.net
row "anycast name, static metric" "$resolver" cost.web.any.example.net
row "forwarded, cached" "$resolver" www.bench.example
row "baseline: hickory Catalog, in-memory zone" "$baseline" www.bench.example
