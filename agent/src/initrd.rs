//! `nodectl initrd`: the initramfs step, from cmdline to a mounted /sysroot.
