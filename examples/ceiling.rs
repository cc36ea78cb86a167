//! The ceiling for bench/run.sh: the least an HTTP server can do per
//! delivery. An axum server that reads each request's body and answers 200
//! with nothing else (no signature, no parse, no storage), on the same
//! runtime and allocator as the service. The service's intake is reported
//! as a share of this server's, measured seconds apart in the same run, so
//! the machine's drift cancels out.
//!
//! It prints `listening address=IP:PORT` once it accepts connections.
//!
//! cargo run --release --example ceiling -- --listen 127.0.0.1:0

use axum::Router;
use axum::body::Bytes;
use axum::http::StatusCode;
use axum::routing::post;
use clap::Parser;

// As the service: mimalloc, so the allocator is not the difference.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: std::net::SocketAddr,
}

/// Takes the whole body (as the service must, to check its signature).
async fn receive(body: Bytes) -> StatusCode {
    std::hint::black_box(body);
    StatusCode::OK
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let app = Router::new().route("/webhooks/cobalt", post(receive));
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    println!("listening address={}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
