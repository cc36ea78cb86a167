use std::process::ExitCode;

use clap::Parser;
use cobalt_receiver::cli::{Cli, Command};
use cobalt_receiver::{config, startup::Application, telemetry};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit code for a configuration that cannot be used.
const BAD_CONFIG: u8 = 2;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match config::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(BAD_CONFIG);
        }
    };
    if let Err(error) = telemetry::init(&config.log_filter) {
        eprintln!("error: {error}");
        return ExitCode::from(BAD_CONFIG);
    }
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let served = async { Application::build(&config).await?.run_until_stopped().await };
            if let Err(error) = served.await {
                tracing::error!("{error:#}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}
