//! The `fraudstream` binary: parse the command line, set up logging, run the command.

use std::process::ExitCode;

use clap::Parser;
use fraudstream::cli::{Cli, LogFormat};
use tracing_subscriber::EnvFilter;

/// mimalloc, not the system's allocator: glibc keeps what a long run freed (the entity
/// state `retrain` builds over its history, a batch's buffers) resident in its heap,
/// while mimalloc hands free pages back (docs/benchmarks.md: retrain over 50 M rows
/// within 2 GiB). The detector's CPU per transaction is the same within the machine's
/// noise either way, its peak RSS about 60 MiB higher. Set in the binary only: tests
/// count allocations with an allocator of their own.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = cli
        .log
        .as_deref()
        .map(EnvFilter::new)
        .or_else(|| EnvFilter::try_from_default_env().ok())
        .unwrap_or_else(|| EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour only on a terminal: log files and collectors get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match cli.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    match fraudstream::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
