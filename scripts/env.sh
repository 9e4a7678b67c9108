# Shared paths and pinned versions; sourced by scripts/*. Override MNIC_CACHE to move the cache.
# shellcheck shell=bash
MNIC_CACHE=${MNIC_CACHE:-$HOME/.cache/mnic}
export MNIC_CACHE

# Pinned inputs. The kernel version is the one the patch series was written and tested on.
KERNEL_SERIES=7.3
KERNEL_DEB_VERSION=${KERNEL_DEB_VERSION:-7.3.4-1~bpo13+1}
QEMU_SERIES=11.1
BINDGEN_VERSION=0.71.1
RUSTC_VERSION=$(rustc --version | awk '{print $2}')

QEMU_PREFIX=$MNIC_CACHE/qemu
RUSTSRC_PREFIX=$MNIC_CACHE/rust-src-$RUSTC_VERSION
RUST_LIB_SRC=$RUSTSRC_PREFIX/usr/src/rustc-$RUSTC_VERSION/library
BINDGEN_PREFIX=$MNIC_CACHE/bindgen-$BINDGEN_VERSION
KSRC=$MNIC_CACHE/linux-$KERNEL_DEB_VERSION/src
# Kernel flavors share the source tree and differ in config fragments and build directory:
# "normal" (images/kernel.config) and "debug" (+ images/kernel-debug.config, for the soak).
KERNEL_FLAVOR=${MNIC_KERNEL_FLAVOR:-normal}
case "$KERNEL_FLAVOR" in
	normal) KBUILD=$MNIC_CACHE/linux-$KERNEL_DEB_VERSION/build ;;
	debug) KBUILD=$MNIC_CACHE/linux-$KERNEL_DEB_VERSION/build-debug ;;
	*) echo "MNIC_KERNEL_FLAVOR must be normal or debug, not '$KERNEL_FLAVOR'" >&2; return 1 ;;
esac
export QEMU_PREFIX RUST_LIB_SRC KSRC KBUILD KERNEL_FLAVOR

# The kernel is built with LLVM 19 (bindgen needs libclang >= 15; the recipe verified 19).
kmake() {
	PATH=/usr/lib/llvm-19/bin:$BINDGEN_PREFIX/bin:$PATH \
		make -C "$KSRC" O="$KBUILD" LLVM=1 ARCH=x86_64 RUST_LIB_SRC="$RUST_LIB_SRC" "$@"
}
