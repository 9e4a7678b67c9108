#!/bin/sh
# The main job of `make demo`: the point of mnic, end to end, through the library and tools.
# 1. the guest kernel runs our Rust code, and the mnic NIC is on the PCI bus;
# 2. mnic.ko binds it (MSI-X, queues) and `mnic info` describes it;
# 3. a buffer is registered (nothing pinned), the device DMAs into it and faults the pages
#    in on demand, the buffer is swapped out (MADV_PAGEOUT to zram) and the device entries
#    go with it, then the device DMAs again and faults it back with the right data;
# 4. fork + copy-on-write: the parent's device writes stay in the parent's pages;
# 5. the device's own counters (`mnic stats`): faults, invalidations, SYNCs, and zero stale
#    accesses (the device checks the invariant itself).
set -e
echo "### kernel $(uname -r); PCI functions (vendor:device class):"
for d in /sys/bus/pci/devices/*; do
	echo "  $(basename "$d") $(cat "$d/vendor"):$(cat "$d/device") $(cat "$d/class")"
done
if ! grep -qx 0x4d4e /sys/bus/pci/devices/*/device 2>/dev/null; then
	echo "no mnic NIC (1234:4d4e) attached: run with a device (mnic-vm run --devices 1)" >&2
	exit 1
fi
echo "### insmod mnic.ko"
insmod /lib/modules/mnic.ko
dmesg | grep 'mnic0:' | tail -n 1
echo "### mnic info"
mnic info
echo "### zram swap, so that pages can really leave memory"
echo 64M > /sys/block/zram0/disksize
mkswap /dev/zram0 >/dev/null && swapon /dev/zram0
grep -E 'SwapTotal|SwapFree' /proc/meminfo
echo "### register, DMA, swap out, DMA again (userlib/examples/survive_swapout.rs)"
survive_swapout
echo "### fork and copy-on-write (userlib/examples/fork.rs)"
fork
echo "### device counters (mnic stats)"
mnic stats
