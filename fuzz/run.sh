#!/usr/bin/env bash
# make fuzz: builds the fuzz targets and runs each for FUZZ_SECONDS on its seed corpus plus
# what earlier runs found (fuzz/corpus/<target>, not in git). Fails on the first crash, leak,
# timeout or oversized allocation, and shows it; prints the executions each target reached.
set -euo pipefail
cd "$(dirname "$0")"
seconds=${FUZZ_SECONDS:-60}
targets=${FUZZ_TARGETS:-virtio_net_queues virtio_mmio_transport kernel_loader}
# FUZZ_SANITIZER=none: no AddressSanitizer, 2-6 times the executions per second (the code is
# safe Rust; ASan watches the unsafe inside vm-memory and libc calls). Default: address.
sanitizer=${FUZZ_SANITIZER:-address}
command -v cargo-fuzz >/dev/null || { echo "fuzz: cargo-fuzz is missing: cargo install cargo-fuzz --locked"; exit 1; }
# cargo fuzz's sanitizer flags (-Zsanitizer=address) are unstable options: on the stable
# toolchain RUSTC_BOOTSTRAP=1 allows them.
export RUSTC_BOOTSTRAP=1
echo "fuzz: building the targets ($sanitizer sanitizer, coverage)"
cargo fuzz build -s "$sanitizer" 2>&1 | grep -E '^(error|warning)' -A8 || true
cargo fuzz build -s "$sanitizer" >/dev/null 2>&1 || { cargo fuzz build -s "$sanitizer"; exit 1; }
mkdir -p artifacts
total=0
for t in $targets; do
    mkdir -p "corpus/$t"
    log="artifacts/$t.log"
    # -malloc_limit_mb: any single allocation above it is a failure (no host allocation
    # sized by guest or header values); -timeout: one input taking longer is a hang.
    if ! cargo fuzz run -s "$sanitizer" "$t" "corpus/$t" "seeds/$t" -- -max_total_time="$seconds" \
        -malloc_limit_mb=256 -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 >"$log" 2>&1; then
        grep -v '^#[0-9]' "$log" | tail -60
        echo "fuzz: $t FAILED (log: fuzz/$log; reproduce: cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run -s $sanitizer $t <artifact>)"
        exit 1
    fi
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
    cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1)
    echo "fuzz: $t: $runs executions in ${seconds} s ($rate/s, $cov, corpus $(ls "corpus/$t" | wc -l) inputs), no crash"
    total=$((total + runs))
done
echo "fuzz: all targets passed, $total executions in total"
