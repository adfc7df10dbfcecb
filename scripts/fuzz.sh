#!/usr/bin/env bash
# Fuzzing of the parsers and the DNS front (the crate in fuzz/, libFuzzer).
#
#   scripts/fuzz.sh run [SECONDS] [TARGET...]   fuzz each target for SECONDS
#                                               (default 600), one after the other
#   scripts/fuzz.sh replay [TARGET...]          build and run the committed corpus
#                                               once (CI); fails on any crash
#   scripts/fuzz.sh seeds                       rewrite the generated seeds
#   scripts/fuzz.sh list                        the targets
#
# Targets: name, push, probe_file, config, dns (see fuzz/fuzz_targets/*.rs).
#
# `run` uses cargo-fuzz (installed with `cargo install cargo-fuzz --locked`
# when missing) on the stable toolchain with RUSTC_BOOTSTRAP=1 for its
# nightly-only flags. Each target runs in one process (no -jobs), niced.
# New inputs go to fuzz/target/work-corpus/<target>, not to the committed
# fuzz/corpus/<target> seeds; crashes go to fuzz/artifacts/<target>.
# It ends with a table: executions, executions per second, crashes, corpus
# entries and size, coverage (cov) and features (ft) of each target. A
# crashing target stops at its first crash; reproduce it with
#   fuzz/target/x86_64-unknown-linux-gnu/release/<target> fuzz/artifacts/<target>/crash-...
# and, once fixed, keep it as a regression: copy it into fuzz/corpus/<target>/.
#
# `replay` needs no cargo-fuzz: a plain `cargo build` links libFuzzer's own
# main, and each binary runs the corpus files once (no coverage needed).
# Both need a C++ compiler (libfuzzer-sys builds libFuzzer). fuzz/Cargo.lock
# is the fuzz workspace's own; cargo adds to it what the path crates add.
#
# Environment: FUZZ_SANITIZER (cargo fuzz -s; default none: the code is safe
# Rust, and address sanitizer slows each execution), FUZZ_ARGS (more
# libFuzzer flags for `run`), CARGO_BUILD_JOBS (default 2).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

TARGETS=(name push probe_file config dns)
export CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-2}
SANITIZER=${FUZZ_SANITIZER:-none}

usage() {
    sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

check_targets() {
    local t known
    for t in "$@"; do
        known=no
        for k in "${TARGETS[@]}"; do [ "$t" = "$k" ] && known=yes; done
        if [ "$known" = no ]; then
            echo "unknown target $t (known: ${TARGETS[*]})" >&2
            exit 2
        fi
    done
}

replay() {
    local targets=("$@") t failed=()
    [ ${#targets[@]} -gt 0 ] || targets=("${TARGETS[@]}")
    check_targets "${targets[@]}"
    local bins=()
    for t in "${targets[@]}"; do bins+=(--bin "$t"); done
    if ! command -v c++ >/dev/null 2>&1; then
        echo "libfuzzer-sys builds libFuzzer with a C++ compiler: apt-get install g++" >&2
        exit 1
    fi
    cargo build "${bins[@]}"
    local out=${CARGO_TARGET_DIR:-target}
    for t in "${targets[@]}"; do
        local files=(corpus/"$t"/*)
        if "$out/debug/$t" -timeout=10 "${files[@]}" >"$out/replay-$t.log" 2>&1; then
            echo "replay $t: ${#files[@]} inputs ok"
        else
            echo "replay $t: FAILED (log below)"
            grep -v '^ *[0-9]*: \|^ *at ' "$out/replay-$t.log" | tail -40
            failed+=("$t")
        fi
    done
    if [ ${#failed[@]} -gt 0 ]; then
        echo "replay failed: ${failed[*]}" >&2
        exit 1
    fi
}

ensure_cargo_fuzz() {
    if ! cargo fuzz --version >/dev/null 2>&1; then
        echo "installing cargo-fuzz" >&2
        cargo install cargo-fuzz --locked
    fi
}

# The value of `stat::NAME:` in a libFuzzer log, or "-".
stat() {
    local v
    v=$(sed -n "s/^stat::$1: *//p" "$2" | tail -1)
    echo "${v:--}"
}

# The value of FIELD (cov, ft, corp) on the last status line of a log, or "-".
status_field() {
    local v
    v=$(grep -E '^#[0-9]+' "$2" | tail -1 | sed -n "s/.* $1: \([^ ]*\).*/\1/p")
    echo "${v:--}"
}

run() {
    local seconds=600
    if [ $# -gt 0 ] && [[ $1 =~ ^[0-9]+$ ]]; then
        seconds=$1
        shift
    fi
    local targets=("$@") t
    [ ${#targets[@]} -gt 0 ] || targets=("${TARGETS[@]}")
    check_targets "${targets[@]}"
    ensure_cargo_fuzz
    export RUSTC_BOOTSTRAP=1
    # Built once, run directly: the sources may change during a long run.
    nice -n 19 cargo fuzz build -O -a -s "$SANITIZER"
    local bin_dir
    bin_dir=target/$(rustc -vV | sed -n 's/^host: //p')/release
    mkdir -p target/fuzz-logs
    local rows=() failed=()
    for t in "${targets[@]}"; do
        local work=target/work-corpus/$t log=target/fuzz-logs/$t.log
        mkdir -p "$work" "artifacts/$t"
        local before
        before=$(find "artifacts/$t" -type f | wc -l)
        echo "fuzzing $t for ${seconds}s (log: fuzz/$log)" >&2
        local dict=()
        [ -f "dicts/$t.dict" ] && dict=(-dict="dicts/$t.dict")
        local rc=0
        # shellcheck disable=SC2086
        nice -n 19 "$bin_dir/$t" "$work" "corpus/$t" "${dict[@]}" \
            -artifact_prefix="artifacts/$t/" -max_total_time="$seconds" \
            -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 ${FUZZ_ARGS:-} \
            >"$log" 2>&1 || rc=$?
        local after crashes
        after=$(find "artifacts/$t" -type f | wc -l)
        crashes=$((after - before))
        if [ "$rc" -ne 0 ] && [ "$crashes" -eq 0 ]; then
            crashes="?(exit $rc)"
        fi
        rows+=("$(printf '| %s | %s | %s | %s | %s | %s | %s |' "$t" \
            "$(stat number_of_executed_units "$log")" \
            "$(stat average_exec_per_sec "$log")" "$crashes" \
            "$(status_field corp "$log")" \
            "$(status_field cov "$log")" "$(status_field ft "$log")")")
        if [ "$crashes" != 0 ]; then
            failed+=("$t")
            grep -E 'panicked at|^SUMMARY|Test unit written' "$log" | head -5 >&2 || true
        fi
    done
    echo
    echo "| target | executions | exec/s | crashes | corpus (entries/size) | cov | ft |"
    echo "|---|---|---|---|---|---|---|"
    printf '%s\n' "${rows[@]}"
    if [ ${#failed[@]} -gt 0 ]; then
        echo "crashed: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
        return 1
    fi
}

case ${1:-} in
    run) shift; run "$@" ;;
    replay) shift; replay "$@" ;;
    seeds) cargo run --example seeds ;;
    list) printf '%s\n' "${TARGETS[@]}" ;;
    *) usage ;;
esac
