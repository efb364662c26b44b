//! bootd, the nodeboot boot server. For now the artifact server: kernel,
//! initramfs, the live image and its `.sha256` sidecar over HTTP/1.1 with
//! Range, HEAD and validators, plus Grendel's `/repo/` tree. The inventory,
//! iPXE scripts, tokens and DHCP/TFTP come later as modules beside these.
//!
//! - [`http`]: request heads (httparse), ranges, validators, dates.
//! - [`files`]: URL path → file inside the served trees, refusals.
//! - [`transfer`]: file range → socket (sendfile, or paced for tests).
//! - [`server`]: listener, connections, responses, access log.
pub mod files;
pub mod http;
pub mod server;
pub mod transfer;
