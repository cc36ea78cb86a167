//! cobalt-receiver: the endpoint a clinic registers with Cobalt.
//!
//! A delivery to `POST /webhooks/cobalt` is checked against the webhook
//! secrets ([`signature`]), parsed into an event ([`domain`]), and stored
//! with the job state it implies in one durable transaction ([`store`]);
//! only then is it answered 2xx. Status queries under `/v1` read the same
//! store ([`routes`]), and so does the change feed of every job's changes
//! ([`feed`]). [`startup`] wires it together for `main` and the tests.

pub mod audit;
pub mod auth;
pub mod background;
pub mod canonical_json;
pub mod capacity;
pub mod cli;
pub mod clinic_hours;
pub mod clock;
pub mod cobalt;
pub mod config;
pub mod console;
pub mod domain;
pub mod error;
pub mod feed;
pub mod linger;
pub mod listen;
pub mod listing;
pub mod monitoring;
pub mod openapi;
pub mod operator;
pub mod os_error;
pub mod outbound;
pub mod pagination;
pub mod payload_storage;
pub mod phi;
pub mod reconcile;
pub mod request_error;
pub mod request_id;
pub mod retention;
pub mod rotation;
pub mod routes;
pub mod sealing;
pub mod secret;
pub mod signature;
pub mod startup;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod tls;

#[cfg(test)]
mod properties;
