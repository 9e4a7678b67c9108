#!/bin/sh
# KTAP: kmemleak finds no leaked object allocated by mnic code (driver, mm abstractions).
# Runs last in a boot of the debug kernel (make soak-debug); skips where kmemleak is absent.
echo "KTAP version 1"
echo "1..1"
k=/sys/kernel/debug/kmemleak
if [ ! -w $k ]; then
	echo "ok 1 no_mnic_leaks # SKIP no kmemleak in this kernel"
	exit 0
fi
# Two scans: an object is only reported once it stayed unreferenced across a scan.
echo scan > $k; sleep 1; echo scan > $k
cat $k > /tmp/kmemleak.txt
total=$(grep -c '^unreferenced object' /tmp/kmemleak.txt)
ours=$(awk '/^unreferenced object/{rec=""} {rec=rec"\n"$0} /^$/{if (rec ~ /mnic|mmu_notifier|hmm/) n++} END{print n+0}' /tmp/kmemleak.txt)
echo "# kmemleak: $total suspected leaks in all, $ours with mnic/hmm/mmu_notifier in the backtrace"
if [ "$ours" -eq 0 ]; then
	echo "ok 1 no_mnic_leaks"
else
	grep -A20 'unreferenced object' /tmp/kmemleak.txt | sed 's/^/# /' | head -60
	echo "not ok 1 no_mnic_leaks"
	exit 1
fi
