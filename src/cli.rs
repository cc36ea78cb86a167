//! The command line: the server and the operator's tools.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "cobalt-receiver",
    version,
    about = "Receives Cobalt patient-note webhooks and answers status queries"
)]
pub struct Cli {
    /// TOML configuration file; environment variables override it.
    #[arg(
        long,
        global = true,
        env = "COBALT_RECEIVER_CONFIG",
        value_name = "PATH"
    )]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (the default).
    Serve,
    /// Apply the database migrations and exit.
    Migrate,
    /// Load and validate the configuration, print it with secrets redacted.
    CheckConfig,
    /// Print the signature Cobalt would send for a body.
    Sign {
        /// Environment variable that holds the secret to sign with (default:
        /// the first of the configuration's webhook secrets).
        #[arg(long, value_name = "VAR")]
        secret_env: Option<String>,
        /// File with the body (`-` for standard input).
        file: PathBuf,
    },
    /// Post a signed sample `patient_note.created` and `patient_note.failed`,
    /// with fresh ids, to a running receiver and report what it answered.
    SendTestEvent {
        /// Where to send: the receiver's webhook URL, or a base such as
        /// https://host, whose /webhooks/cobalt is used. Default: the
        /// configured `listen` address (127.0.0.1 when it listens on all
        /// addresses), over https when TLS is configured.
        #[arg(long)]
        url: Option<String>,
        /// Skip certificate checks, for a receiver reached on its local
        /// address (its certificate names the public host).
        #[arg(long)]
        insecure: bool,
        /// Environment variable that holds the secret to sign with (default:
        /// the first of the configuration's webhook secrets).
        #[arg(long, value_name = "VAR")]
        secret_env: Option<String>,
    },
    /// Copy every event, payload and job state of a SQLite database file
    /// into the configured PostgreSQL database (`database_url`). Safe to
    /// re-run: what is there already is kept.
    CopyFromSqlite {
        /// The SQLite database file, e.g. /data/cobalt-receiver.db.
        file: PathBuf,
    },
    /// Run one recovery sweep against Cobalt's API now (whatever the
    /// background schedule) and print what it found, as JSON.
    Reconcile {
        /// Ask about this job instead of the overdue ones (repeatable).
        #[arg(long = "job-id", value_name = "ID")]
        job_ids: Vec<String>,
        /// First day (YYYY-MM-DD) of the failed-deliveries window, instead
        /// of `reconcile_lookback_days` back.
        #[arg(long, value_name = "DATE")]
        since: Option<String>,
    },
    /// Print a new key line for `encryption_keys`: ID, a colon, 32 random
    /// bytes in base64.
    GenerateKey {
        /// The key's id (letters, digits, `-`, `_`, `.`; at most 32), for
        /// example the month it was made: 2026-12.
        id: String,
    },
    /// Re-seal every stored MRN and payload under the first key of
    /// `encryption_keys`, while the service runs; then the other keys can
    /// be removed. Safe to interrupt and run again.
    RotateKeys {
        /// Longest to wait for running replicas to stop sealing under an
        /// old key (they must be given the new key list first).
        #[arg(long, value_name = "SECONDS", default_value_t = 300)]
        wait_secs: u64,
    },
    /// Exit 0 when the receiver's readiness route answers 200 (for container
    /// health checks without curl), 1 when it does not.
    Healthcheck {
        /// What to probe: a readiness URL, or a base such as
        /// http://127.0.0.1:8080, whose /readyz is probed. Default: /readyz
        /// on the configured `listen` address (on 127.0.0.1 when it listens
        /// on all addresses), over https when TLS is configured.
        #[arg(long)]
        url: Option<String>,
        /// Skip certificate checks, for probing an HTTPS receiver on its
        /// local address (its certificate names the public host).
        #[arg(long)]
        insecure: bool,
    },
}
