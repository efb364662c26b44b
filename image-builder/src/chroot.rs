//! Running commands inside a root tree: proc, sys and dev mounted for the
//! duration, unmounted on every path (a guard).
