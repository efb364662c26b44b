//! bootd, the nodeboot boot server. For now the artifact server: kernel,
//! initramfs, the live image and its `.sha256` sidecar over HTTP/1.1 with
//! Range, HEAD and validators, plus Grendel's `/repo/` tree; and the nodes'
//! status (`POST /status`, `GET /nodes`, the page at `/`); the inventory and
//! the per-host iPXE script (`GET /boot/ipxe?mac=…`); per-host secrets behind
//! tokens minted into those scripts (`GET /secrets/<name>`); for the firmware,
//! a DHCP responder (full or proxyDHCP) and a read-only TFTP server.
//!
//! - [`http`]: request heads (httparse), ranges, validators, dates.
//! - [`files`]: URL path → file inside the served trees, refusals.
//! - [`transfer`]: file range → socket (sendfile, or paced for tests).
//! - [`status`]: node status reports, validated and kept in memory; `/nodes`.
//! - [`page`]: the HTML status page at `/`.
//! - [`inventory`]: hosts and images (TOML), reload, Grendel import, iPXE.
//! - [`template`]: the Go-template kernel command line (gtmpl).
//! - [`secrets`]: per-host secrets behind tokens minted into iPXE scripts.
//! - [`server`]: listener, connections, responses, access log.
//! - [`dhcp`]: DHCP answers for the inventory's hosts (boot file by client).
//! - [`tftp`]: the iPXE binaries over TFTP, read-only.
//! - [`netboot`]: the DHCP and TFTP sockets and threads beside HTTP.
pub mod dhcp;
pub mod files;
pub mod http;
pub mod inventory;
pub mod netboot;
pub mod page;
pub mod secrets;
pub mod server;
pub mod status;
pub mod template;
pub mod tftp;
pub mod transfer;
