//! A squashfs 4.0 writer: reproducible, zstd, blocks compressed on all cores.
