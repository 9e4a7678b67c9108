#!/bin/sh
# The main job of `make demo`: what this build of mnic can show end to end today.
# 1. the guest kernel runs our Rust code (the smoke module);
# 2. the mnic NIC, if a device server is attached, is on the PCI bus;
# 3. the point of the project at the kernel level: a mirror of a user buffer kept by an
#    mmu interval notifier + hmm_range_fault, torn down by munmap, MADV_PAGEOUT (zram swap),
#    fork/COW, mprotect, exit and the OOM reaper, without pinning (mm-mirror-test).
set -e
echo "### kernel: $(uname -r); Rust smoke module:"
insmod /lib/modules/mnic_smoke.ko && dmesg | grep mnic_smoke | tail -n 1 && rmmod mnic_smoke
echo "### PCI functions (vendor:device class):"
for d in /sys/bus/pci/devices/*; do
	echo "  $(basename "$d") $(cat "$d/vendor"):$(cat "$d/device") $(cat "$d/class")"
done
if grep -qx 0x4d4e /sys/bus/pci/devices/*/device 2>/dev/null; then
	echo "### the mnic NIC (1234:4d4e) is present"
fi
echo "### coherent mirroring of user memory without pinning (mm-mirror-test):"
mm-mirror-test
