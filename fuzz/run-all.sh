#!/usr/bin/env bash
# Run every fuzz target for SECONDS each (default 60); `make fuzz-smoke`.
#
#   fuzz/run-all.sh [SECONDS] [TARGET...]
#
# Builds all targets once, replays fuzz/regressions/<target>-* (reproducers
# of bugs found in src/: each must pass once its bug is fixed; see
# fuzz/README.md), then fuzzes each
# target with fuzz/corpus/<target> (working corpus, gitignored, new inputs
# go there) and fuzz/seeds/<target> (committed seeds). Prints one summary
# line per target and exits non-zero if any target crashed; the crashing
# input is in fuzz/artifacts/<target>/ and the log in
# fuzz/target/fuzz-logs/<target>.log.
#
# Environment:
#   FUZZ_SANITIZER  cargo fuzz --sanitizer (default none: the crate has no
#                   unsafe code, and ASan doubles build and run time;
#                   `address` for a careful run)
#   FUZZ_STRICT=1   also fail on the known bug the `response` target
#                   otherwise tolerates (see fuzz/README.md)
set -uo pipefail

seconds=${1:-60}
shift || true
cd "$(dirname "$0")/.."
root=$PWD
fuzz_dir=$root/fuzz
all_targets=(frame chunked response timestamp lines dns sink_response)
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=("${all_targets[@]}")

export RUSTC_BOOTSTRAP=1
sanitizer=${FUZZ_SANITIZER:-none}
build_flags=(--fuzz-dir "$fuzz_dir" --sanitizer "$sanitizer" --codegen-units 16)

if ! command -v cargo >/dev/null && [[ -f $HOME/.cargo/env ]]; then
    # shellcheck disable=SC1091
    source "$HOME/.cargo/env"
fi

# cargo-fuzz: use it if present; wait for an install already running (a
# machine's setup may start one in the background); else install it.
ensure_cargo_fuzz() {
    cargo fuzz --version >/dev/null 2>&1 && return 0
    local log=/tmp/cargo-fuzz-install.log waited=0
    while { pgrep -f 'cargo install cargo-fuzz' >/dev/null 2>&1 ||
        { [[ -f $log ]] && [[ -n $(find "$log" -mmin -2 2>/dev/null) ]]; }; } &&
        ! cargo fuzz --version >/dev/null 2>&1 && ((waited < 900)); do
        ((waited == 0)) && echo "fuzz: waiting for the cargo-fuzz install in progress ($log)"
        sleep 10
        waited=$((waited + 10))
    done
    cargo fuzz --version >/dev/null 2>&1 && return 0
    echo "fuzz: installing cargo-fuzz"
    cargo install cargo-fuzz --locked >>"$log" 2>&1 || {
        tail -20 "$log"
        echo "fuzz: cannot install cargo-fuzz" >&2
        exit 2
    }
}
ensure_cargo_fuzz

start=$(date +%s)
echo "== fuzz: building ${targets[*]} ($(cargo fuzz --version), sanitizer $sanitizer)"
log_dir=$fuzz_dir/target/fuzz-logs
mkdir -p "$log_dir"
if ! cargo fuzz build "${build_flags[@]}" >"$log_dir/build.log" 2>&1; then
    grep -v '^ *Compiling ' "$log_dir/build.log" | tail -40
    echo "fuzz: build failed (log: $log_dir/build.log)" >&2
    exit 2
fi
host=$(rustc -vV | sed -n 's/^host: //p')
bin_dir=$fuzz_dir/target/$host/release
echo "== fuzz: built in $(( $(date +%s) - start )) s"

failed=()

# Reproducers of bugs found in src/: each must run clean (a tolerated known
# bug fails only with FUZZ_STRICT=1).
shopt -s nullglob
for t in "${targets[@]}"; do
    regs=("$fuzz_dir"/regressions/"$t"-*)
    [[ ${#regs[@]} -gt 0 ]] || continue
    if "$bin_dir/$t" "${regs[@]}" >"$log_dir/$t-regressions.log" 2>&1; then
        echo "$t: ${#regs[@]} regression inputs pass"
    else
        echo "$t: REGRESSION INPUT FAILS (log: $log_dir/$t-regressions.log)"
        grep -m1 -A3 'panicked at' "$log_dir/$t-regressions.log" | sed 's/^/    /'
        failed+=("$t-regressions")
    fi
done

for t in "${targets[@]}"; do
    corpus=$fuzz_dir/corpus/$t
    mkdir -p "$corpus" "$fuzz_dir/artifacts/$t"
    log=$log_dir/$t.log
    cargo fuzz run "${build_flags[@]}" "$t" "$corpus" "$fuzz_dir/seeds/$t" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=30 \
        -print_final_stats=1 >"$log" 2>&1
    rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    cov=$(grep -Eo 'cov: [0-9]+' "$log" | tail -1 | cut -d' ' -f2)
    files=$(find "$corpus" -type f | wc -l)
    if [[ $rc -eq 0 ]]; then
        echo "$t: ok, ${execs:-?} execs in ${seconds} s, coverage ${cov:-?}, corpus $files inputs"
    else
        artifact=$(grep -Eo 'Test unit written to [^ ]+' "$log" | tail -1 | cut -d' ' -f5)
        echo "$t: FAILED (exit $rc) after ${execs:-?} execs; input ${artifact:-?}; log $log"
        grep -m1 -A6 -E 'panicked at|ERROR: libFuzzer' "$log" | sed 's/^/    /'
        failed+=("$t")
    fi
done

echo "== fuzz: finished in $(( $(date +%s) - start )) s"
if [[ ${#failed[@]} -gt 0 ]]; then
    echo "fuzz: failures: ${failed[*]}" >&2
    exit 1
fi
