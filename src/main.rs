use std::process::ExitCode;

use clap::Parser;
use cobalt_receiver::cli::{Cli, Command};
use cobalt_receiver::{config, operator, startup::Application, telemetry};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit code for a configuration that cannot be used.
const BAD_CONFIG: u8 = 2;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Serve);

    // Commands that need no configuration.
    match &command {
        Command::Sign { secret_env, file } => {
            return report(operator::sign_file(secret_env, file).map(|s| println!("{s}")));
        }
        Command::Healthcheck { url, insecure } => {
            return if operator::healthcheck(url, *insecure).await {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            };
        }
        Command::SendTestEvent {
            url,
            secret_env: Some(variable),
        } => {
            let sent = match operator::secret_from_env(variable) {
                Ok(secret) => operator::send_test_event(url, &secret).await,
                Err(error) => Err(error),
            };
            return accepted(sent);
        }
        _ => {}
    }

    let config = match config::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(BAD_CONFIG);
        }
    };
    match command {
        Command::CheckConfig => report(operator::show_config(&config).map(|text| print!("{text}"))),
        Command::SendTestEvent { url, .. } => match config.webhook_secrets.first() {
            Some(secret) => accepted(operator::send_test_event(&url, secret).await),
            None => report(Err(anyhow::anyhow!(
                "no webhook secret to sign with; pass --secret-env"
            ))),
        },
        Command::Migrate | Command::Serve => {
            if let Err(error) = telemetry::init(&config.log_filter, config.log_format) {
                eprintln!("error: {error}");
                return ExitCode::from(BAD_CONFIG);
            }
            let done = if matches!(command, Command::Migrate) {
                operator::migrate(&config).await
            } else {
                async { Application::build(&config).await?.run_until_stopped().await }.await
            };
            if let Err(error) = done {
                tracing::error!("{error:#}");
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Command::Sign { .. } | Command::Healthcheck { .. } => unreachable!("handled above"),
    }
}

fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Success when every test event was answered 2xx.
fn accepted(sent: anyhow::Result<bool>) -> ExitCode {
    match sent {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => report(Err(error)),
    }
}
