use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "nodeimg", version, about = "nodeboot image builder")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build a reproducible zstd squashfs (+ .sha256 and .json manifest) from a
    /// root directory or a tar / tar.zst archive of one.
    Build(nodeimg::build::Args),
    /// Build the node's initramfs with dracut, 90nodeboot and the static nodectl.
    Initramfs(nodeimg::initramfs::Args),
    /// Make a node root filesystem.
    Rootfs {
        #[command(subcommand)]
        what: nodeimg::rootfs::What,
    },
}

fn main() -> ExitCode {
    // `NAME generate-docs DIR`: man pages and completions (cargo xtask dist).
    nodeboot_clidocs::run_if_asked(<Cli as clap::CommandFactory>::command);
    nodeboot_common::log::init("NODEIMG_LOG", nodeboot_common::log::Console::Off);
    let r = match Cli::parse().cmd {
        Cmd::Build(a) => nodeimg::build::run(&a),
        Cmd::Initramfs(a) => nodeimg::initramfs::run(&a),
        Cmd::Rootfs { what } => nodeimg::rootfs::run(&what),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nodeimg: error: {e:#}");
            ExitCode::from(1)
        }
    }
}
