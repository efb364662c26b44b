//! What nodeboot's three programs (nodectl, bootd, nodeimg) share: the
//! logging setup ([`log`]), the one runner of external commands ([`cmd`])
//! and the one retry-with-backoff loop ([`retry`]).
pub mod cmd;
pub mod log;
pub mod retry;
