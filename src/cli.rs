//! The command line.

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
}
