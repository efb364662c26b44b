//! nodeboot agent: the code behind `nodectl`, everything that runs on a node.
// The command runner and the logging setup are shared with bootd and nodeimg.
pub use nodeboot_common::{cmd, log};
pub mod cache;
pub mod cmdline;
pub mod disk;
pub mod fetch;
pub mod firmware;
pub mod identity;
pub mod initrd;
pub mod knownhosts;
pub mod ldapcheck;
pub mod live;
pub mod native;
pub mod net;
pub mod nodeos;
pub mod nodetoml;
pub mod peer;
pub mod provision;
pub mod repo;
pub mod report;
pub mod secret;
pub mod status;
pub mod trust;
