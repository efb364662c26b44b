//! The one logging setup of nodeboot's binaries: `tracing` to stderr without
//! timestamps (journald adds them), colours only on a terminal, the filter
//! from the environment variable `var` (default `info`).
pub fn init(var: &str) {
    tracing_subscriber::fmt()
        .without_time()
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env(var)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
}
