# Shared by the scripts that start the real binaries on loopback
# (bench-dns.sh, soak.sh). Sourced, not run: expects `set -euo pipefail` and
# the repository root as the working directory.
#
#   need_command dnsperf            # apt-get install it if missing
#   start_work                      # $work: a temp dir; start_bg: tracked
#   start_bg "$bin/x" args 2>"$work/x.log"
#   addr=$(listening "$work/x.log" dns-udp)
#   start_bench_resolver "$upstream"  # $resolver, $resolver_pid
#   read -r qps lost < <(dnsperf_fields "$out" qps lost)

# Installs the Debian package $2 (default: $1) with apt-get when the command
# $1 is missing. Needs root for the install; says so otherwise.
need_command() {
    local command=$1 package=${2:-$1}
    command -v "$command" >/dev/null 2>&1 && return 0
    if [ "$(id -u)" -ne 0 ]; then
        echo "$command is missing: apt-get install $package (as root)" >&2
        exit 1
    fi
    echo "installing $package" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$package" >/dev/null
}

# Makes $work, a temp dir, and arranges for it and every process started
# with start_bg to go away when the script exits, however it exits.
start_work() {
    work=$(mktemp -d)
    pids=()
    trap stop_all EXIT
}

# Runs a command in the background, remembered for stop_all. Redirections
# go after it as usual: `start_bg cmd args 2>log`. Sets $last_pid.
start_bg() {
    "$@" &
    last_pid=$!
    pids+=("$last_pid")
}

stop_all() {
    local pid
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$work"
}

# Waits for a `listening on ADDR listener="NAME"` line in LOG; prints ADDR.
listening() {
    local log=$1 name=$2
    for _ in $(seq 100); do
        local addr
        addr=$(sed -n "s/.*listening on \([0-9.:]*\) listener=\"$name\".*/\1/p" "$log" | head -n1)
        if [ -n "$addr" ]; then
            echo "$addr"
            return 0
        fi
        sleep 0.1
    done
    echo "no $name address in $log:" >&2
    cat "$log" >&2
    return 1
}

# Starts $bin/anycast-resolver forwarding to UPSTREAM, with one group (web)
# of three members nothing listens on: probes are refused at once, the
# members are down and answers use the fallback (every member considered),
# which does the same work per query as measured members. Its config is
# $work/resolver.toml and its log $work/resolver.log; sets $resolver (the
# DNS address) and $resolver_pid. With $pin set to a CPU list, the resolver
# runs on those cores only (taskset), and its runtime sizes itself to them.
start_bench_resolver() {
    local upstream=$1
    cat >"$work/resolver.toml" <<EOF
[dns]
listen = ["127.0.0.1:0"]
[http]
listen = "127.0.0.1:0"
[forward]
upstreams = ["$upstream"]
[[zone]]
name = "any.example.net"
[[group]]
service = "web"
[[group.member]]
address = "127.0.1.1"
cost = 5
[[group.member]]
address = "127.0.1.2"
cost = 30
[[group.member]]
address = "127.0.1.3"
cost = 80
EOF
    NO_COLOR=1 start_bg ${pin:+taskset -c "$pin"} "$bin/anycast-resolver" --config "$work/resolver.toml" 2>"$work/resolver.log"
    resolver_pid=$last_pid
    resolver=$(listening "$work/resolver.log" dns-udp)
}

# Prints fields of a dnsperf report, space-separated, in the order asked:
#   qps       queries per second
#   sent      queries sent
#   completed queries completed
#   lost      queries lost
#   mean      average latency, seconds
#   max       largest latency, seconds
#   rcode:X   responses with code X (NOERROR, NXDOMAIN, SERVFAIL, ...), 0 if none
dnsperf_fields() {
    local out=$1
    shift
    local field values=()
    for field in "$@"; do
        case $field in
            qps) values+=("$(awk '/Queries per second:/ {print $4}' "$out")") ;;
            sent) values+=("$(awk '/Queries sent:/ {print $3}' "$out")") ;;
            completed) values+=("$(awk '/Queries completed:/ {print $3}' "$out")") ;;
            lost) values+=("$(awk '/Queries lost:/ {print $3}' "$out")") ;;
            mean) values+=("$(awk '/Average Latency \(s\):/ {print $4}' "$out")") ;;
            max) values+=("$(awk '/Average Latency \(s\):/ {gsub(/\)/, "", $8); print $8}' "$out")") ;;
            rcode:*)
                values+=("$(awk -v code="${field#rcode:}" '
                    /Response codes:/ {
                        for (i = 3; i < NF; i++) if ($i == code) n = $(i + 1)
                    }
                    END { print n + 0 }' "$out")")
                ;;
            *)
                echo "dnsperf_fields: unknown field $field" >&2
                return 1
                ;;
        esac
    done
    echo "${values[*]}"
}
