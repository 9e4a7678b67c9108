#!/usr/bin/env bash
# `make bench` (after `make initramfs`): the performance report (targets in docs/performance.md).
#   1. host: the device-model criterion benches (qemu-device/benches/device.rs), native;
#   2. guest: one boot with one NIC running images/guest/bench.sh (every `mnic bench`
#      case, each against its baseline in the same boot), console kept;
#   2b. guest behind QEMU's emulated IOMMU: a second boot with `mnic-vm run --iommu` runs
#      the COPY and registration cases again (named `iommu_<case>`), and the ratio of each
#      against the same case of step 2 is printed (what the IOMMU costs);
#   2c. the fabric: the host benchmark of two device engines over the real UDP transport
#      (qemu-device/benches/fabric_rma.rs: 1 MiB PUT against memcpy and against a raw UDP
#      stream of 1 MiB, the transport's floor; an 8-byte PUT against a raw UDP round trip),
#      and a guest with two NICs on one fabric running `mnic pingpong` and `mnic bw` for
#      PUT/GET and for tagged SEND/RECV, each against a local COPY of the same bytes in
#      the same boot, and `mnic bw --target-pageout --target-pinned` (a
#      network fault per page against a local device fault, an on-demand target against
#      a pinned one); their text reports go to results/fabric.txt;
#   3. mnic-bench-report (tools/bench-report) turns both into results/report.md, SVG
#      plots, results/results.json and a summary table of the targets (printed).
# Environment: MNIC_BENCH_MODE=quick (fewer sizes/iterations), MNIC_BENCH_OUT=DIR
# (default results), MNIC_BENCH_MEM_MIB (guest RAM, default 2048: pinning 1 GiB needs
# the pages), MNIC_BENCH_SKIP_HOST=1 / MNIC_BENCH_SKIP_GUEST=1 / MNIC_BENCH_SKIP_FABRIC=1,
# CARGO_JOBS (default -j2),
# MNIC_BENCH_DOC (the page whose generated part the report rewrites; default
# docs/performance.md in full mode, none in quick mode; empty: none).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/env.sh
source scripts/env.sh

start=$(date +%s)
mode=${MNIC_BENCH_MODE:-full}
out=${MNIC_BENCH_OUT:-results}
mem=${MNIC_BENCH_MEM_MIB:-2048}
jobs=${CARGO_JOBS:--j2}
if [ "$mode" = full ]; then doc=${MNIC_BENCH_DOC-docs/performance.md}; else doc=${MNIC_BENCH_DOC:-}; fi
mkdir -p "$out"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/mnic-bench.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

echo "== make bench ($mode): building the report tool"
# shellcheck disable=SC2086
cargo build --release $jobs -q -p mnic-bench-report

if [ "${MNIC_BENCH_SKIP_HOST:-0}" != 1 ]; then
	echo "== host: device-model criterion benches (native, 2 s per benchmark)"
	# Old estimates of benches that no longer exist would be read as current: start clean.
	rm -rf target/criterion/translate target/criterion/copy target/criterion/invalidate
	# shellcheck disable=SC2086
	cargo bench $jobs -p mnic-device --bench device -- --noplot 2>&1 |
		tee "$out/host-bench.txt" | grep -E '^[a-z_]+/|time:|thrpt:' || true
fi

guest_rc=0
if [ "${MNIC_BENCH_SKIP_GUEST:-0}" != 1 ]; then
	echo "== guest: one boot, 1 NIC, ${mem} MiB, TCG: images/guest/bench.sh $mode"
	set +e
	target/release/mnic-vm run --kernel "$KBUILD/arch/x86/boot/bzImage" \
		--initrd target/images/initramfs.cpio --device-bin target/release/mnic-device \
		--devices 1 --memory-mib "$mem" --timeout 1200 --quiet \
		--log "$tmp/console.log" --cmd "sh /usr/share/mnic/bench.sh $mode" &
	vm=$!
	# Show the guest's progress lines while it runs.
	tail -n +1 -F "$tmp/console.log" 2>/dev/null | grep --line-buffered -E '^# bench|@@MNIC-(FAIL|DONE)' &
	tailer=$!
	wait $vm
	guest_rc=$?
	sleep 1.5 # let tail -F show the last lines
	kill "$tailer" 2>/dev/null
	wait "$tailer" 2>/dev/null
	set -e
	cp "$tmp/console.log" "$out/guest-console.log"
	[ $guest_rc -eq 0 ] || echo "make bench: the guest run ended with status $guest_rc (see $out/guest-console.log)" >&2
fi

# The cases run again behind the IOMMU: `NAME|mnic bench ARGS|ROW|METRIC`, NAME the case of
# images/guest/bench.sh it is compared with, ROW and METRIC (tools/bench-schema names) the
# time the ratio compares.
if [ "$mode" = quick ]; then n_iommu=3; else n_iommu=15; fi
iommu_cases=(
	"copy_hot_1M|copy --size 1M -n $n_iommu|device_copy|p50_us"
	"copy_hot_16M|copy --size 16M -n $n_iommu|device_copy|p50_us"
	"register_16M|register --size 16M --no-touch -n $n_iommu --warmup 1|on_demand|register_p50_us"
)
if [ "${MNIC_BENCH_SKIP_GUEST:-0}" != 1 ] && [ "${MNIC_BENCH_SKIP_IOMMU:-0}" != 1 ]; then
	echo "== guest behind the emulated IOMMU (--iommu): ${#iommu_cases[@]} cases"
	job=". /usr/share/mnic/bench-env.sh 512M
dmesg -n 1 2>/dev/null
fails=0
m=@@MNIC
r() { name=\$1; shift
	if mnic bench \"\$@\" --json >/tmp/b.json 2>/tmp/b.err; then echo \"\${m}-JSON iommu_\$name \$(tr -d '\\n' </tmp/b.json)\"
	else echo \"\${m}-FAIL iommu_\$name rc=\$? \$(tail -n 3 /tmp/b.err | tr '\\n' ' ')\"; fails=\$((fails + 1)); fi; }"
	for c in "${iommu_cases[@]}"; do
		IFS='|' read -r name args _ _ <<<"$c"
		job+=$'\n'"r $name $args"
	done
	job+=$'\n''echo "${m}-DONE fails=$fails"'
	set +e
	target/release/mnic-vm run --kernel "$KBUILD/arch/x86/boot/bzImage" \
		--initrd target/images/initramfs.cpio --device-bin target/release/mnic-device \
		--devices 1 --iommu --memory-mib "$mem" --timeout 1200 --quiet \
		--log "$tmp/console-iommu.log" --cmd "$job"
	iommu_rc=$?
	set -e
	cp "$tmp/console-iommu.log" "$out/guest-iommu-console.log"
	[ $iommu_rc -eq 0 ] || echo "make bench: the --iommu guest run ended with status $iommu_rc (see $out/guest-iommu-console.log)" >&2
	echo "== the emulated IOMMU against none (same case, same metric; > 1: the IOMMU costs)"
	value() { # value CONSOLE CASE ROW METRIC: the metric of that row in the case's report
		sed -n "s/.*@@MNIC-JSON $2 //p" "$1" | tr -d '\r' | tail -n 1 |
			jq -r --arg r "$3" --arg m "$4" \
				'[.results[] | select(.name == $r) | .metrics[$m]] | first // empty | . * 10 | round / 10' 2>/dev/null
	}
	printf '%-14s %-28s %10s %10s %7s\n' case metric no_iommu iommu ratio
	for c in "${iommu_cases[@]}"; do
		IFS='|' read -r name _ row metric <<<"$c"
		base=$(value "$out/guest-console.log" "$name" "$row" "$metric" 2>/dev/null || true)
		with=$(value "$out/guest-iommu-console.log" "iommu_$name" "$row" "$metric")
		ratio=$(awk -v a="$with" -v b="$base" 'BEGIN { if (a != "" && b > 0) printf "%.2f", a / b; else print "-" }')
		printf '%-14s %-28s %10s %10s %7s\n' "$name" "$row.$metric" "${base:--}" "${with:--}" "$ratio"
	done | tee "$out/iommu-ratio.txt"
	grep '@@MNIC-FAIL' "$out/guest-iommu-console.log" || true
fi

if [ "${MNIC_BENCH_SKIP_FABRIC:-0}" != 1 ]; then
	echo "== the fabric: host engines over UDP (fabric_rma), then a guest with two NICs on one fabric"
	{
		# shellcheck disable=SC2086
		cargo bench $jobs -q -p mnic-device --bench fabric_rma 2>/dev/null | grep -v '^$' || echo "fabric_rma: failed"
		if [ "${MNIC_BENCH_SKIP_GUEST:-0}" != 1 ]; then
			if [ "$mode" = quick ]; then fargs="-n 5"; else fargs="-n 50"; fi
			# The target's costs: a network fault per page against a local one
			# (--target-pageout) and an on-demand target against a pinned one
			# (--target-pinned); bench-env.sh loads mnic.ko and sets up the zram swap
			# MADV_PAGEOUT needs.
			if [ "$mode" = quick ]; then targs="--sizes 64K -n 5"; else targs="--sizes 64K,1M -n 20"; fi
			fjob=". /usr/share/mnic/bench-env.sh 256M; [ -z \"\$BENCH_ENV_ERR\" ] || echo \"@@MNIC-FAIL fabric env \$BENCH_ENV_ERR\"; for op in put send; do for b in pingpong bw; do echo \"## mnic \$b --op \$op $fargs\"; mnic \$b --op \$op $fargs || echo \"@@MNIC-FAIL fabric \$b \$op\"; done; done; echo \"## mnic bw --target-pageout --target-pinned $targs\"; mnic bw --target-pageout --target-pinned $targs || echo \"@@MNIC-FAIL fabric bw target\""
			set +e
			target/release/mnic-vm run --kernel "$KBUILD/arch/x86/boot/bzImage" \
				--initrd target/images/initramfs.cpio --device-bin target/release/mnic-device \
				--devices 2 --fabric --memory-mib 1024 --timeout 1200 --quiet \
				--log "$tmp/console-fabric.log" --cmd "$fjob"
			fabric_rc=$?
			set -e
			tr -d '\r' <"$tmp/console-fabric.log" | sed -n '/^## mnic /,$p' | grep -v '^@@MNIC-DONE'
			[ $fabric_rc -eq 0 ] || echo "make bench: the fabric guest run ended with status $fabric_rc"
		fi
	} | tee "$out/fabric.txt"
fi

elapsed=$(($(date +%s) - start))
cpu=$(lscpu 2>/dev/null | sed -n 's/^Model name:[[:space:]]*//p' | head -n 1)
echo "== report"
target/release/mnic-bench-report --criterion target/criterion \
	$([ -f "$out/guest-console.log" ] && echo --guest "$out/guest-console.log") \
	$([ -f "$out/guest-iommu-console.log" ] && echo --guest "$out/guest-iommu-console.log") \
	--out "$out" \
	--meta "command=make bench (MNIC_BENCH_MODE=$mode)" \
	--meta "date=$(date -u '+%Y-%m-%d %H:%M UTC')" \
	--meta "host=$(nproc) cores, ${cpu:-unknown CPU}, $(free -g | awk '/Mem:/ {print $2}') GiB RAM, $(uname -r), shared with other builds/VMs" \
	--meta "toolchain=$(rustc --version), release profile" \
	--meta "wall time=${elapsed} s (build excluded: make initramfs ran first)" \
	$([ -n "$doc" ] && echo --doc "$doc")
echo "make bench: done in $(($(date +%s) - start)) s"
exit $guest_rc
