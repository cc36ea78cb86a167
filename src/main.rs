use std::path::Path;
use std::process::ExitCode;

use clap::Parser;
use cobalt_receiver::cli::{Cli, Command};
use cobalt_receiver::config::{self, Config, ConfigError};
use cobalt_receiver::sealing::Keyring;
use cobalt_receiver::secret::Secret;
use cobalt_receiver::{auth, cobalt, operator, reconcile, startup::Application, store, telemetry};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Why a command did not succeed; each kind has its own exit code.
enum Failure {
    /// Exit 1: the command ran and failed (a port in use, a database that
    /// cannot be opened, a receiver that is not ready, an event refused).
    Failed(anyhow::Error),
    /// Exit 2: the configuration cannot be used.
    Config(ConfigError),
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Self {
        // Keys that cannot open the stored data are a configuration error.
        match store::sealing::missing_key(&error) {
            Some(missing) => Self::Config(ConfigError::Source(missing.to_string())),
            None => Self::Failed(error),
        }
    }
}

impl From<ConfigError> for Failure {
    fn from(error: ConfigError) -> Self {
        Self::Config(error)
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Serve);
    // One `error:` line on stderr, never a log line: it must read well
    // whatever the log settings.
    match run(command, cli.config.as_deref()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Failed(error)) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
        Err(Failure::Config(error)) => {
            eprintln!("error: {error}");
            ExitCode::from(2)
        }
    }
}

/// Runs `command`, loading only the configuration it needs.
async fn run(command: Command, config_file: Option<&Path>) -> Result<(), Failure> {
    // The configuration checks its own keys; the API tokens' and Cobalt's
    // keys are checked by the modules that read them.
    let load = || -> Result<Config, ConfigError> {
        let config = config::load(config_file)?;
        let locate = |error| config.origins.locate(error);
        auth::check_tokens(&config).map_err(locate)?;
        cobalt::Credentials::check(&config).map_err(locate)?;
        Ok(config)
    };
    match command {
        Command::Serve => {
            let config = load()?;
            config.require_webhook_secret()?;
            let traces = telemetry::trace_export(
                |name| std::env::var(name).ok(),
                config.otlp_endpoint.as_deref(),
            )
            .map_err(|message| Failure::Config(ConfigError::Source(message)))?;
            let telemetry = init_telemetry(&config, traces)?;
            let served = match Application::build(&config).await {
                Ok(application) => application.run_until_stopped().await,
                Err(error) => Err(error),
            };
            telemetry.shutdown().await;
            served?;
        }
        Command::Migrate => {
            let config = load()?;
            init_logs(&config)?;
            operator::migrate(&config).await?;
        }
        Command::CheckConfig => {
            let config = load()?;
            if let Err(missing) = config.require_webhook_secret() {
                eprintln!("warning: {missing}; `serve` will refuse to start");
            }
            if let Some(warning) = reconcile::outage_warning(&config) {
                eprintln!("warning: {warning}");
            }
            for (name, why) in auth::ApiTokens::new(&config.api_tokens).weak() {
                eprintln!("warning: the API token `{name}` is weak: {why}; replace it");
            }
            print!("{}", operator::show_config(&config)?);
        }
        Command::Sign { secret_env, file } => {
            let secret = signing_secret(secret_env.as_deref(), load)?;
            println!("{}", operator::sign_file(&secret, &file)?);
        }
        Command::SendTestEvent {
            url,
            secret_env,
            insecure,
        } => {
            let secret = signing_secret(secret_env.as_deref(), load)?;
            let url = match url {
                Some(given) => {
                    operator::url_or_base(&given, cobalt_receiver::routes::webhooks::PATH)?
                }
                None => operator::local_url(&load()?, cobalt_receiver::routes::webhooks::PATH),
            };
            if !operator::send_test_event(&url, &secret, insecure).await? {
                return Err(anyhow::anyhow!("the receiver did not accept every test event").into());
            }
        }
        Command::CopyFromSqlite { file } => {
            let config = load()?;
            init_logs(&config)?;
            operator::copy_from_sqlite(&config, &file).await?;
        }
        Command::Reconcile { job_ids, since } => {
            let config = load()?;
            init_logs(&config)?;
            let clean = operator::reconcile(&config, job_ids, since.as_deref()).await?;
            if !clean {
                return Err(anyhow::anyhow!("the sweep was not complete: see its errors").into());
            }
        }
        Command::GenerateKey { id } => match Keyring::generate(&id) {
            Ok(line) => println!("{line}"),
            Err(_) => {
                return Err(anyhow::anyhow!(
                    "the key id must be 1 to {} letters, digits, `-`, `_` or `.`",
                    cobalt_receiver::sealing::MAX_KEY_ID_LEN
                )
                .into());
            }
        },
        Command::RotateKeys { wait_secs } => {
            let config = load()?;
            init_logs(&config)?;
            operator::rotate_keys(&config, std::time::Duration::from_secs(wait_secs)).await?;
        }
        Command::Healthcheck { url, insecure } => {
            let url = match url {
                Some(given) => operator::url_or_base(&given, "/readyz")?,
                None => operator::local_url(&load()?, "/readyz"),
            };
            operator::healthcheck(&url, insecure).await?;
        }
    }
    Ok(())
}

/// The secret in the environment variable `secret_env`, or else the
/// configuration's first webhook secret.
fn signing_secret(
    secret_env: Option<&str>,
    load: impl FnOnce() -> Result<Config, ConfigError>,
) -> Result<Secret, Failure> {
    if let Some(variable) = secret_env {
        return Ok(operator::secret_from_env(variable)?);
    }
    load()?.webhook_secrets.into_iter().next().ok_or_else(|| {
        Failure::Config(ConfigError::Source(
            "no webhook secret to sign with: set webhook_secrets, or pass --secret-env VAR".into(),
        ))
    })
}

/// Logs for an operator command; its few spans are not traced.
fn init_logs(config: &Config) -> Result<(), Failure> {
    // Nothing is exported, so there is nothing to send at exit.
    let _logs_only = init_telemetry(config, None)?;
    Ok(())
}

fn init_telemetry(
    config: &Config,
    traces: Option<telemetry::TraceExport>,
) -> Result<telemetry::Telemetry, Failure> {
    telemetry::init(&config.log_filter, config.log_format, traces)
        .map_err(|message| Failure::Config(ConfigError::Source(message)))
}
