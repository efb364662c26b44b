//! nodeboot agent: the code behind `nodectl`, everything that runs on a node.
pub mod cmd;
pub mod cmdline;
pub mod disk;
pub mod fetch;
pub mod firmware;
pub mod identity;
pub mod initrd;
pub mod live;
pub mod log;
pub mod native;
pub mod net;
pub mod nodetoml;
pub mod provision;
pub mod repo;
pub mod report;
pub mod secret;
pub mod status;
