//! nodeimg: everything that makes what a node boots.
//!
//! - [`squashfs`]: a reproducible, parallel squashfs 4.0 writer (zstd);
//! - [`tar`]: a streaming tar reader (ustar, GNU, pax with xattrs and sparse members);
//! - [`tree`]: the source of an image (a directory or a tar / tar.zst archive);
//! - [`build`]: `nodeimg build`: source → image + `.sha256` + manifest;
//! - [`initramfs`]: `nodeimg initramfs`: dracut with 90nodeboot and nodectl;
//! - [`rootfs`]: `nodeimg rootfs debian`: the demo/test node root (debootstrap).
pub mod build;
pub mod chroot;
pub mod initramfs;
pub mod rootfs;
pub mod squashfs;
pub mod tar;
pub mod tree;

/// Parse an archive as `nodeimg build` does, without building: the entry
/// point for fuzzing (see [`tree::scan_tar`]).
pub use tree::scan_tar;
