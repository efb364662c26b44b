//! bootd: the nodeboot boot server. For now: the artifact server (kernel,
//! initramfs, live image and its sidecar over HTTP with Range, and Grendel's
//! `/repo/`); inventory, iPXE scripts and tokens come next.
pub mod files;
pub mod http;
pub mod server;
