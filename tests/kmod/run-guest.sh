#!/bin/bash
# Boots the cached guest kernel with a throw-away busybox initramfs holding the mm_mirror_test
# module and the mm-mirror-test program, runs the program, and prints the console log.
# KUnit runs only our doctests (kunit.filter_glob) in the same boot.
#   tests/kmod/run-guest.sh [extra kernel command line]
# Builds the module (scripts/kmake) and the static program (cargo, target dir target/kabi) first.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
source "$here/scripts/env.sh"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$here/target/kabi}

"$here/scripts/kmake" M="$here/tests/kmod/mm_mirror_test" modules >/dev/null
RUSTFLAGS='-C target-feature=+crt-static' cargo build --quiet --release \
	--target x86_64-unknown-linux-gnu -p mm-mirror-test --manifest-path "$here/Cargo.toml"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/root
mkdir -p "$root/bin" "$root/usr/bin" "$root/lib/modules"
cp /bin/busybox "$root/bin/"
cp "$here/tests/kmod/mm_mirror_test/mm_mirror_test.ko" "$root/lib/modules/"
cp "$CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release/mm-mirror-test" "$root/usr/bin/"
cat >"$root/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /tmp
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
export PATH=/usr/bin:/bin
/usr/bin/mm-mirror-test
echo "MM-MIRROR-EXIT=$?"
dmesg | grep -iE 'warn|bug|oops|mm_mirror' | head -20
reboot -f
INIT
chmod +x "$root/init"
(cd "$root" && find . | cpio -o -H newc 2>/dev/null | gzip) >"$work/initrd.gz"
timeout 900 "$here/scripts/qemu" -M q35 -accel tcg -m 1G -smp 2 -nographic -no-reboot \
	-kernel "$KBUILD/arch/x86/boot/bzImage" -initrd "$work/initrd.gz" \
	-append "console=ttyS0 panic=-1 kunit.filter_glob=rust_doctests_kernel.rust_doctest_kernel_mm_* $*"
