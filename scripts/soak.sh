#!/usr/bin/env bash
# Load soak of anycast-resolver (release build) on loopback: DURATION seconds
# at the highest rate this machine sustains, then the verdict.
#
#   scripts/soak.sh                      # 60 s
#   DURATION=600 scripts/soak.sh         # longer
#   nice -n -10 scripts/soak.sh          # on a machine other work shares
#
# The load, all at once for DURATION seconds:
#   valid     dnsperf, as fast as answered (CLIENTS, INFLIGHT): anycast names
#             (every metric, A, AAAA, TXT, the zone's SOA) interleaved with
#             200 forwarded names answered from the resolver's cache (the
#             upstream is `anycast-lab baseline-dns` on loopback, as in
#             bench-dns.sh)
#   nxdomain  dnsperf, the same way: unknown services, an unknown metric,
#             names with too many labels under the anycast zone
#   garbage   python3: GARBAGE_RATE datagrams a second of random bytes
#             (1 to 512 of them)
#
# It fails (exit 1) unless:
#   * no valid name was answered SERVFAIL (nor anything but NOERROR), and the
#     NXDOMAIN names were answered NXDOMAIN;
#   * the resolver is still running, answers a query after the load, and
#     logged no panic;
#   * its resident memory (VmRSS) at the end of the load is at most
#     RSS_GROWTH percent above what it was after WARMUP seconds (caches
#     filled, allocator settled). Each is the median of 5 samples a second
#     apart (the first 5 after the warm-up, the last 5 of the load): a
#     single sample swings by a megabyte with what is in flight. A shrink is
#     not a failure.
# Queries dnsperf counts as lost are reported, not judged: the up to
# INFLIGHT queries in flight when the time limit stops dnsperf count as lost,
# and at saturation the kernel may drop datagrams before the resolver sees
# them.
#
# Installs dnsperf and python3 with apt-get if missing. Everything runs on
# 127.0.0.1; the script stops what it started on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

DURATION=${DURATION:-60}
WARMUP=${WARMUP:-10}
# Per dnsperf instance: simulated clients, threads, queries in flight.
CLIENTS=${CLIENTS:-8}
THREADS=${THREADS:-1}
INFLIGHT=${INFLIGHT:-100}
GARBAGE_RATE=${GARBAGE_RATE:-1000}
RSS_GROWTH=${RSS_GROWTH:-10}

if [ "$WARMUP" -gt $((DURATION - 11)) ]; then
    echo "WARMUP ($WARMUP s) must end well before DURATION ($DURATION s)" >&2
    exit 2
fi

need_command dnsperf
need_command python3

cargo build --release -j2 -q -p anycast-resolver -p anycast-lab
bin=target/release

start_work
start_bg "$bin/anycast-lab" baseline-dns --listen 127.0.0.1:0 2>"$work/upstream.log"
upstream=$(listening "$work/upstream.log" dns-udp)

start_bench_resolver "$upstream"
host=${resolver%:*}
port=${resolver##*:}

# The query files.
anycast=(
    "web.any.example.net A"
    "rt.web.any.example.net A"
    "load.web.any.example.net A"
    "path.web.any.example.net A"
    "rr.web.any.example.net A"
    "random.web.any.example.net A"
    "cost.web.any.example.net A"
    "serverload.web.any.example.net A"
    "web.any.example.net AAAA"
    "web.any.example.net TXT"
    "any.example.net SOA"
)
for i in $(seq 200); do
    echo "${anycast[i % ${#anycast[@]}]}"
    echo "h$i.bench.example A"
done >"$work/valid"
{
    for i in $(seq 100); do
        echo "nosuch$i.any.example.net A"
    done
    echo "bogus.web.any.example.net A"
    echo "a.b.web.any.example.net A"
    echo "x.a.b.web.any.example.net TXT"
} >"$work/nxdomain"

# Fill the forwarding cache once.
dnsperf -s "$host" -p "$port" -d "$work/valid" -n 1 >/dev/null 2>&1 || true

cat >"$work/garbage.py" <<'EOF'
import os, random, socket, sys, time

host, port, rate, duration = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setblocking(False)
start, sent = time.monotonic(), 0
while True:
    now = time.monotonic() - start
    if now >= duration:
        break
    due = sent / rate
    if due > now:
        time.sleep(due - now)
        continue
    try:
        s.sendto(os.urandom(random.randint(1, 512)), (host, port))
    except BlockingIOError:
        pass
    sent += 1
    try:  # whatever comes back (FORMERR and the like) is dropped
        while s.recv(4096):
            pass
    except BlockingIOError:
        pass
print(sent)
EOF

rss() { awk '/^VmRSS:/ {print $2}' "/proc/$resolver_pid/status" 2>/dev/null || echo 0; }

echo "soak: ${DURATION} s; per dnsperf: $CLIENTS clients, $THREADS thread(s), $INFLIGHT in flight;" \
    "garbage $GARBAGE_RATE/s; $(nproc) cores; resolver pid $resolver_pid at $resolver" >&2
run_dnsperf() {
    local file=$1 out=$2
    dnsperf -s "$host" -p "$port" -d "$file" -l "$DURATION" \
        -c "$CLIENTS" -T "$THREADS" -q "$INFLIGHT" >"$out" 2>&1
}
start_bg run_dnsperf "$work/valid" "$work/valid.out"
valid_pid=$last_pid
start_bg run_dnsperf "$work/nxdomain" "$work/nxdomain.out"
nx_pid=$last_pid
garbage_pid=
if [ "$GARBAGE_RATE" != 0 ]; then
    start_bg python3 "$work/garbage.py" "$host" "$port" "$GARBAGE_RATE" "$DURATION" >"$work/garbage.out"
    garbage_pid=$last_pid
fi

# Resident memory each second to the end of the load.
median() { printf '%s\n' "$@" | sort -n | sed -n "$(($# / 2 + 1))p"; }
rss_max=0 rss_trace=() rss_first=() rss_last=()
for t in $(seq "$((DURATION - 1))"); do
    sleep 1
    now=$(rss)
    [ "$now" -gt "$rss_max" ] && rss_max=$now
    [ "$t" -ge "$WARMUP" ] && [ "${#rss_first[@]}" -lt 5 ] && rss_first+=("$now")
    [ "$t" -ge $((DURATION - 5)) ] && rss_last+=("$now")
    [ $((t % 5)) -eq 0 ] && rss_trace+=("$((now / 1024))")
done
rss_start=$(median "${rss_first[@]}")
rss_end=$(median "${rss_last[@]}")
status=0
wait "$valid_pid" || { echo "dnsperf (valid) failed:" >&2; cat "$work/valid.out" >&2; status=1; }
wait "$nx_pid" || { echo "dnsperf (nxdomain) failed:" >&2; cat "$work/nxdomain.out" >&2; status=1; }
[ -n "$garbage_pid" ] && { wait "$garbage_pid" || true; }
garbage_sent=$(cat "$work/garbage.out" 2>/dev/null || echo 0)

read -r v_qps v_sent v_done v_lost v_mean v_noerror v_servfail < <(
    dnsperf_fields "$work/valid.out" qps sent completed lost mean rcode:NOERROR rcode:SERVFAIL)
read -r n_qps n_sent n_done n_lost n_mean n_nxdomain n_servfail < <(
    dnsperf_fields "$work/nxdomain.out" qps sent completed lost mean rcode:NXDOMAIN rcode:SERVFAIL)

# After the load: still running, still answering, no panic.
alive=yes
kill -0 "$resolver_pid" 2>/dev/null || alive=no
dnsperf -s "$host" -p "$port" -d <(echo "web.any.example.net A") -n 1 >"$work/after.out" 2>&1 || true
read -r after_noerror < <(dnsperf_fields "$work/after.out" rcode:NOERROR)
panics=$(grep -c "panicked" "$work/resolver.log" || true)

# A row of the verdict: criterion, figure, and "ok" if it holds.
judge() {
    local verdict=ok
    if [ "$3" != ok ]; then
        verdict=FAIL
        status=1
    fi
    echo "| $1 | $2 | $verdict |"
}
pct() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.1f", 100 * a / b; else print "n/a" }'; }
growth=$(awk -v s="$rss_start" -v e="$rss_end" 'BEGIN { if (s > 0) printf "%+.1f", 100 * (e - s) / s; else print "n/a" }')
rss_ok=$(awk -v s="$rss_start" -v e="$rss_end" -v g="$RSS_GROWTH" 'BEGIN { print (s > 0 && e * 100 <= s * (100 + g)) ? "ok" : "no" }')

echo
echo "| load | queries/s | sent | answered | lost | mean latency | answers |"
echo "|---|---|---|---|---|---|---|"
awk -v q="$v_qps" -v s="$v_sent" -v d="$v_done" -v l="$v_lost" -v m="$v_mean" -v ne="$v_noerror" -v sf="$v_servfail" \
    'BEGIN { printf "| valid (anycast + forwarded) | %.0f | %d | %d | %d | %.3f ms | NOERROR %d, SERVFAIL %d |\n", q, s, d, l, m * 1000, ne, sf }'
awk -v q="$n_qps" -v s="$n_sent" -v d="$n_done" -v l="$n_lost" -v m="$n_mean" -v nx="$n_nxdomain" -v sf="$n_servfail" \
    'BEGIN { printf "| NXDOMAIN | %.0f | %d | %d | %d | %.3f ms | NXDOMAIN %d, SERVFAIL %d |\n", q, s, d, l, m * 1000, nx, sf }'
echo "| garbage datagrams | $((garbage_sent / DURATION)) | $garbage_sent | | | | |"
awk -v a="$v_qps" -v b="$n_qps" 'BEGIN { printf "| **total DNS** | **%.0f** | | | | | |\n", a + b }'
echo
echo "| criterion | figure | verdict |"
echo "|---|---|---|"
judge "no SERVFAIL for valid names" \
    "$v_servfail SERVFAIL, $((v_done - v_noerror)) not NOERROR, of $v_done" \
    "$([ "$v_servfail" -eq 0 ] && [ "$v_noerror" -eq "$v_done" ] && [ "$v_done" -gt 0 ] && echo ok)"
judge "NXDOMAIN names answered NXDOMAIN" \
    "$n_nxdomain of $n_done ($n_servfail SERVFAIL)" \
    "$([ "$n_nxdomain" -eq "$n_done" ] && [ "$n_done" -gt 0 ] && echo ok)"
judge "resolver alive and answering, no panic" \
    "running: $alive, answered after the load: $after_noerror, panics logged: $panics" \
    "$([ "$alive" = yes ] && [ "$after_noerror" -eq 1 ] && [ "$panics" -eq 0 ] && echo ok)"
judge "VmRSS at the end at most ${RSS_GROWTH} % above the start (after ${WARMUP} s)" \
    "${rss_start} kB -> ${rss_end} kB (${growth} %), max ${rss_max} kB" \
    "$rss_ok"
echo "| VmRSS every 5 s (MiB) | ${rss_trace[*]} | |"
echo "| lost (reported, not judged) | valid $(pct "$v_lost" "$v_sent") %, NXDOMAIN $(pct "$n_lost" "$n_sent") % | |"
if [ "$status" -ne 0 ]; then
    echo "soak FAILED; the resolver's log:" >&2
    tail -n 50 "$work/resolver.log" >&2
fi
exit "$status"
