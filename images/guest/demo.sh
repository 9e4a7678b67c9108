#!/bin/sh
# The guest jobs of `make demo`: the point of mnic, end to end, through the library and tools.
#
# `demo.sh` (one guest, one NIC):
# 1. the guest kernel runs our Rust code, and the mnic NIC is on the PCI bus;
# 2. mnic.ko binds it (MSI-X, queues) and `mnic info` describes it;
# 3. a buffer is registered (nothing pinned), the device DMAs into it and faults the pages
#    in on demand, the buffer is swapped out (MADV_PAGEOUT to zram) and the device entries
#    go with it, then the device DMAs again and faults it back with the right data;
# 4. fork + copy-on-write: the parent's device writes stay in the parent's pages;
# 5. the device's own counters (`mnic stats`): faults, invalidations, SYNCs, and zero stale
#    accesses (the device checks the invariant itself).
#
# `demo.sh fabric-client` / `demo.sh fabric-server` (two guests of `mnic-vm run --peer-cmd`,
# one NIC each, nodes of one fabric, joined by the serial link /dev/ttyS1):
# 6. ping-pong: one-way PUT latency between the two guests' memories;
# 7. a PUT (and GET) stream from guest 1 into a buffer of guest 2 that guest 2 pages out to
#    zram every 100 ms while the stream runs; guest 2 then checks that the data arrived
#    intact and prints its device's counters (network faults, invalidations, zero stale
#    accesses).
# Every end runs watched by the stale-access oracle (`--oracle`, spec 8a): each says how many
# invalidations of its process the oracle reported to its device, which counts no violation.
set -e
role=${1:-local}

# The two-guest part's sizes and ends, shared with the fabric-two boot of `make test`.
. /usr/share/mnic/fabric-link.sh

load_driver() {
	if ! grep -qx 0x4d4e /sys/bus/pci/devices/*/device 2>/dev/null; then
		echo "no mnic NIC (1234:4d4e) attached: run with a device (mnic-vm run --devices 1)" >&2
		exit 1
	fi
	echo "### insmod mnic.ko"
	insmod /lib/modules/mnic.ko
	dmesg | grep 'mnic0:' | tail -n 1
}

zram_swap() {
	echo "### zram swap, so that pages can really leave memory"
	echo 64M > /sys/block/zram0/disksize
	mkswap /dev/zram0 >/dev/null && swapon /dev/zram0
	grep -E 'SwapTotal|SwapFree' /proc/meminfo
}

case $role in
local)
	echo "### kernel $(uname -r); PCI functions (vendor:device class):"
	for d in /sys/bus/pci/devices/*; do
		echo "  $(basename "$d") $(cat "$d/vendor"):$(cat "$d/device") $(cat "$d/class")"
	done
	load_driver
	echo "### mnic info"
	mnic info
	zram_swap
	echo "### register, DMA, swap out, DMA again (userlib/examples/survive_swapout.rs)"
	survive_swapout
	echo "### fork and copy-on-write (userlib/examples/fork.rs)"
	fork
	echo "### device counters (mnic stats)"
	mnic stats
	;;
fabric-client)
	load_driver
	fabric_load_oracle
	echo "### mnic info: this guest's NIC is one node of the fabric"
	mnic info
	echo "### ping-pong with guest 2 (PUT into its memory, it PUTs back; one way = half)"
	fabric_pingpong_connect -n 50 --warmup 5
	echo "### PUT/GET stream into guest 2's buffer, which guest 2 pages out meanwhile"
	fabric_bw_connect -n 5 --warmup 1
	;;
fabric-server)
	load_driver
	fabric_load_oracle
	zram_swap
	echo "### ping-pong server (answers each PUT of guest 1 with a PUT back)"
	fabric_pingpong_serve
	echo "### stream target: the window is paged out every $FABRIC_PAGEOUT_MS ms while guest 1 streams"
	fabric_bw_serve
	echo "### device counters (mnic stats): network faults, invalidations, stale accesses, oracle reports and violations"
	mnic stats
	;;
*)
	echo "usage: demo.sh [fabric-client|fabric-server]" >&2
	exit 2
	;;
esac
