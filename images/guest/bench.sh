#!/bin/sh
# The guest half of `make bench` (scripts/bench.sh boots the VM and runs this).
# Runs every `mnic bench` case and prints, per case, one line the host extracts:
#   @@MNIC-JSON NAME {...one-line JSON report...}
#   @@MNIC-FAIL NAME rc=N last stderr lines
# plus "@@MNIC-ENV {...}" first and "@@MNIC-DONE fails=N" last. Progress goes to stderr.
# Usage: bench.sh [quick]   (quick: fewer iterations and sizes, for trying it out)
. /usr/share/mnic/bench-env.sh 512M
dmesg -n 1 2>/dev/null # keep kernel messages off the console lines the host parses
if [ -n "$BENCH_ENV_ERR" ]; then
	echo "@@MNIC-FAIL setup rc=1 $BENCH_ENV_ERR"
	echo "@@MNIC-DONE fails=1"
	exit 1
fi
mode=${1:-full}
fails=0
mem_kb=$(awk '/MemTotal/ {print $2}' /proc/meminfo)
swap_kb=$(awk '/SwapTotal/ {print $2}' /proc/meminfo)
echo "@@MNIC-ENV {\"mode\":\"$mode\",\"cpus\":$(nproc),\"mem_total_kb\":$mem_kb,\"swap_total_kb\":$swap_kb,\"kernel\":\"$(uname -r)\"}"

run() { # run NAME ARGS...
	name=$1
	shift
	echo "# bench $name: mnic bench $*" >&2
	start=$(date +%s)
	if mnic bench "$@" --json >/tmp/bench.json 2>/tmp/bench.err; then
		echo "@@MNIC-JSON $name $(tr -d '\n' </tmp/bench.json)"
	else
		rc=$?
		echo "@@MNIC-FAIL $name rc=$rc $(tail -n 3 /tmp/bench.err | tr '\n' ' ')"
		fails=$((fails + 1))
	fi
	grep -E 'not supported|EOPNOTSUPP' /tmp/bench.err >&2
	echo "# bench $name: $(($(date +%s) - start)) s" >&2
}

if [ "$mode" = quick ]; then
	N=3
	COPY_SIZES="4K 1M"
	REG_SIZES="4K 1M 64M"
else
	N=15
	COPY_SIZES="4K 64K 1M 16M"
	REG_SIZES="4K 64K 1M 16M 256M 1G"
fi

# DMA bandwidth: device COPY against memcpy, hot (prefetched, cached) and cold
# (fresh on-demand registration each iteration: every page faults in).
for s in $COPY_SIZES; do
	run "copy_hot_$s" copy --size "$s" -n $N
	run "copy_cold_$s" copy --size "$s" --cold -n $N
done
# Registration cost: on-demand against pinned (REG_PINNED), resident pages, no touch.
for s in $REG_SIZES; do
	case $s in
	1G | 256M) n=3 ;;
	*) n=$N ;;
	esac
	run "register_$s" register --size "$s" --no-touch -n $n --warmup 1
done
# Device first-touch faults against prefetch and CPU faults; swap-in.
run fault_4M fault --size 4M -n $N
# Invalidation: munmap / MADV_PAGEOUT slowdown of a registered range, SYNC waits.
run invalidate_1M invalidate --size 1M -n $N
run invalidate_16M invalidate --size 16M -n $((N / 3 + 1))
# Traffic generator at a fixed rate while a second thread swaps the range out.
# 4 MiB, 5000 random 4 KiB reads/writes at 5000/s (1 s per run unperturbed); a page-out
# of the registered range costs one SYNC per page, and every page then faults back.
run traffic_swap traffic --size 4M --pattern random-rw --rate 5000 --ops 5000 \
	--pageout-every-ms 250 -n 3 --warmup 1 --timeout-ms 120000
# Shadow doorbells and the polling device: SYNC round trips and one 4 KiB hot COPY item,
# shadow against trapped doorbells (alternating blocks), and the idle device's CPU time.
run sync sync -n $N --batch 40
run doorbell_4K doorbell --size 4K -n $N --batch 20
run idle idle -n 2 --period-ms 1000
echo "@@MNIC-DONE fails=$fails"
[ $fails -eq 0 ]
