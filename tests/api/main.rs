//! End-to-end tests: each starts the real server on a loopback port with
//! a database of its own, on the engine under test (see `database`), and
//! talks HTTP to it.

mod capacity;
mod cli;
mod console;
mod console_browser;
mod console_charts;
mod console_display;
mod console_outbound;
mod console_replicas;
mod copy;
mod crash;
mod database;
mod deploys;
mod expected_jobs;
mod fake_cobalt;
mod feed;
mod group_commit;
mod helpers;
mod hostile;
mod https;
mod job_state;
mod lifecycle;
mod metrics;
mod openapi;
mod outbound;
mod permissions;
mod process;
mod proxy;
mod recovery;
mod replicas;
mod retention;
mod sealing;
mod status_api;
mod storage;
mod strangers;
mod traces;
mod trouble;
mod webhooks;
