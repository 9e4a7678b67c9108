#!/usr/bin/env bash
# `make bench`: performance runs. The benchmarks need the device model (criterion benches
# in qemu-device/benches) and the driver + `mnic bench` (userlib); until they exist this
# says so and fails, rather than printing numbers that were not measured.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if ! ls qemu-device/benches/*.rs >/dev/null 2>&1; then
	echo "make bench: no benchmarks yet (the device model's criterion benches and 'mnic bench' are not written; see issue 8)" >&2
	exit 1
fi
mkdir -p results
cargo bench -p mnic-device -- --quick 2>&1 | tee results/host-bench.txt
