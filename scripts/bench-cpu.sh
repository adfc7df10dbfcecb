#!/usr/bin/env bash
# CPU per DNS answer: anycast-resolver against gdnsd (Debian's package, its
# `weighted` plugin choosing one of four addresses) and hickory's Catalog, in
# one sitting, under the same dnsperf load on loopback.
#
#   scripts/bench-cpu.sh                 # 15 s per server
#   DURATION=30 scripts/bench-cpu.sh
#
# Each server is pinned to core 0 (`taskset -c 0`) and dnsperf to core 1
# (`-c 8 -q 200`, as fast as the server answers). CPU per answer is the
# server's user + system time over the run (/proc/PID/stat, all its threads)
# divided by the queries it answered. A server that is not at 100 % CPU was
# held back by dnsperf, and its figure is what that rate cost.
#
# Installs dnsperf and gdnsd with apt-get if they are missing (needs root for
# that). Everything runs on 127.0.0.1; the script stops what it started on
# exit. Prints a Markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

DURATION=${DURATION:-15}
SERVER_CORE=${SERVER_CORE:-0}
LOAD_CORE=${LOAD_CORE:-1}

need_command dnsperf
need_command gdnsd
need_command taskset util-linux

cargo build --release -j2 -q -p anycast-resolver -p anycast-lab
bin=target/release
start_work

# A free UDP port on 127.0.0.1 for gdnsd, which cannot be given port 0.
free_port() {
    python3 -c 'import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start_gdnsd() {
    local dir=$work/gdnsd port
    port=$(free_port)
    mkdir -p "$dir/zones"
    cat >"$dir/config" <<EOF
options => {
  listen => [ 127.0.0.1:$port ]
  udp_threads => 1
  tcp_threads => 1
}
plugins => {
  weighted => {
    web => {
      m1 = [ 127.0.1.1, 1 ]
      m2 = [ 127.0.1.2, 1 ]
      m3 = [ 127.0.1.3, 1 ]
      m4 = [ 127.0.1.4, 1 ]
    }
  }
}
EOF
    cat >"$dir/zones/any.example.net" <<'EOF'
@ 86400 SOA ns1 hostmaster 1 7200 1800 259200 900
@ 86400 NS ns1
ns1 86400 A 127.0.0.1
web 1 DYNA weighted!web
EOF
    start_bg taskset -c "$SERVER_CORE" gdnsd -c "$dir" start 2>"$work/gdnsd.log"
    gdnsd_pid=$last_pid
    gdnsd=127.0.0.1:$port
    for _ in $(seq 100); do
        grep -q "DNS listeners started" "$work/gdnsd.log" && return 0
        sleep 0.1
    done
    echo "gdnsd did not start:" >&2
    cat "$work/gdnsd.log" >&2
    return 1
}

# User + system clock ticks of PID and all its threads.
cpu_ticks() {
    awk '{ print $14 + $15 }' "/proc/$1/stat"
}

# One row: dnsperf against ADDR for NAME while PID serves it.
row() {
    local what=$1 pid=$2 addr=$3 name=$4 out=$work/dnsperf.out
    echo "$name A" >"$work/queries"
    # Warm up (a first forwarded answer, the allocator, the caches).
    dnsperf -s "${addr%:*}" -p "${addr##*:}" -d "$work/queries" -l 1 >/dev/null 2>&1 || true
    local before after
    before=$(cpu_ticks "$pid")
    taskset -c "$LOAD_CORE" dnsperf -s "${addr%:*}" -p "${addr##*:}" -d "$work/queries" \
        -l "$DURATION" -c 8 -q 200 >"$out" 2>&1 || {
        cat "$out" >&2
        return 1
    }
    after=$(cpu_ticks "$pid")
    read -r qps completed lost < <(dnsperf_fields "$out" qps completed lost)
    awk -v w="$what" -v n="$name" -v q="$qps" -v c="$completed" -v l="$lost" \
        -v t="$((after - before))" -v hz="$(getconf CLK_TCK)" -v d="$DURATION" \
        'BEGIN {
            cpu = t / hz
            printf "| %s | `%s` | %.0f | %.0f %% | **%.2f** | %s |\n", w, n, q, 100 * cpu / d, 1e6 * cpu / c, l
        }'
}

start_gdnsd
start_bg taskset -c "$SERVER_CORE" "$bin/anycast-lab" baseline-dns --listen 127.0.0.1:0 2>"$work/baseline.log"
baseline_pid=$last_pid
baseline=$(listening "$work/baseline.log" dns-udp)
# The resolver on its own core from the start: its runtime sizes itself to it.
pin=$SERVER_CORE start_bench_resolver "$baseline"

echo "dnsperf on core $LOAD_CORE (-c 8 -q 200), servers on core $SERVER_CORE, ${DURATION} s each; $(nproc) cores" >&2
printf '| server | name | queries/s | server CPU | µs CPU per answer | lost |\n'
printf '|---|---|---|---|---|---|\n'
row "gdnsd $(gdnsd 2>&1 | sed -n 's/.*gdnsd version \([0-9.]*\).*/\1/p' | head -n1), weighted, one of four" "$gdnsd_pid" "$gdnsd" web.any.example.net
row "anycast-resolver" "$resolver_pid" "$resolver" rt.web.any.example.net
row "anycast-resolver" "$resolver_pid" "$resolver" cost.web.any.example.net
row "anycast-resolver" "$resolver_pid" "$resolver" random.web.any.example.net
row "anycast-resolver" "$resolver_pid" "$resolver" web.any.example.net
row "hickory Catalog, static zone (\`anycast-lab baseline-dns\`)" "$baseline_pid" "$baseline" www.bench.example
