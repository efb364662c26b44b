//! bootd, the nodeboot boot server. For now the artifact server: kernel,
//! initramfs, the live image and its `.sha256` sidecar over HTTP/1.1 with
//! Range, HEAD and validators, plus Grendel's `/repo/` tree; and the nodes'
//! status (`POST /status`, `GET /nodes`, the page at `/`). The inventory,
//! iPXE scripts, tokens and DHCP/TFTP come later as modules beside these.
//!
//! - [`http`]: request heads (httparse), ranges, validators, dates.
//! - [`files`]: URL path → file inside the served trees, refusals.
//! - [`transfer`]: file range → socket (sendfile, or paced for tests).
//! - [`status`]: node status reports, validated and kept in memory; `/nodes`.
//! - [`page`]: the HTML status page at `/`.
//! - [`server`]: listener, connections, responses, access log.
pub mod files;
pub mod http;
pub mod page;
pub mod server;
pub mod status;
pub mod transfer;
