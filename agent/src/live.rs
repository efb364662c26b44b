//! Live root: loop-mount the squashfs read-only, tmpfs upper, overlayfs at /sysroot.
