#!/bin/busybox sh
# /init of the mnic guest: mount the basics, load the modules the job asks for, run the
# job from /etc/mnic/job (put there by `mnic-vm run --cmd`), report its status on the
# console as MNIC-EXIT=<n> for the host, and power off. With /etc/mnic/interactive present
# it runs the job and then gives a shell.
/bin/busybox --install -s /bin
mkdir -p /proc /sys /dev /tmp /sys/kernel/debug
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t debugfs debugfs /sys/kernel/debug
mount -t tmpfs tmpfs /tmp
mkdir -p /sys/fs/cgroup && mount -t cgroup2 none /sys/fs/cgroup 2>/dev/null
export PATH=/usr/bin:/bin HOME=/root
cd /root
if [ -f /etc/mnic/interactive ]; then
	sh /etc/mnic/job
	echo "mnic guest shell. Programs: $(ls /usr/bin | grep -v -e busybox | tr '\n' ' ')"
	echo "Modules: $(ls /lib/modules | tr '\n' ' ')(insmod /lib/modules/NAME.ko). Leave with: poweroff -f"
	setsid cttyhack sh
	poweroff -f
fi
echo "=== mnic job: $(cat /etc/mnic/job)"
sh /etc/mnic/job
rc=$?
echo "MNIC-EXIT=$rc"
poweroff -f
