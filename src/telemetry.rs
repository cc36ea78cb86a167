//! Logging: `tracing` to standard error, filtered by `RUST_LOG` when set,
//! else by the configured `log_filter`.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. Fails on a filter that does not parse.
pub fn init(log_filter: &str) -> Result<(), String> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(value) if !value.is_empty() => {
            EnvFilter::try_new(&value).map_err(|e| format!("RUST_LOG: {e}"))?
        }
        _ => EnvFilter::try_new(log_filter)
            .map_err(|e| format!("configuration key `log_filter`: {e}"))?,
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    Ok(())
}
