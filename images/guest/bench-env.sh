#!/bin/sh
# Sourced by bench.sh and bench-smoke.sh: loads mnic.ko if no /dev/mnic0 yet and gives
# the guest swap (zram) so that MADV_PAGEOUT really swaps anonymous pages out.
# Usage: . /usr/share/mnic/bench-env.sh [ZRAM_SIZE]   Sets BENCH_ENV_ERR on failure.
BENCH_ENV_ERR=
if [ ! -e /dev/mnic0 ]; then
	insmod /lib/modules/mnic.ko 2>/tmp/bench-insmod.err ||
		BENCH_ENV_ERR="insmod mnic.ko: $(cat /tmp/bench-insmod.err)"
	i=0
	while [ ! -e /dev/mnic0 ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
	[ -e /dev/mnic0 ] || BENCH_ENV_ERR="${BENCH_ENV_ERR:-/dev/mnic0 missing after insmod}"
fi
if [ "$(wc -l </proc/swaps)" -le 1 ] && [ -e /sys/block/zram0/disksize ]; then
	echo "${1:-256M}" >/sys/block/zram0/disksize &&
		mkswap /dev/zram0 >/dev/null 2>&1 && swapon /dev/zram0 ||
		echo "# bench: zram swap set-up failed; page-out numbers will not swap" >&2
fi
