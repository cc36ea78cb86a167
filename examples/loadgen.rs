//! Load generator for cobalt-receiver.
//!
//! `ingest` posts signed `patient_note.*` events (a share of them failures,
//! a share re-sent as duplicates); `read` asks `GET /v1/jobs/{id}` for jobs
//! an earlier ingest with the same `--prefix` created. Every body and
//! signature is made before the clock starts; each of `--concurrency`
//! workers keeps one HTTP/1 connection alive; with several `--url`s the
//! connections are spread over them round-robin. Prints one line:
//! `mode=… concurrency=… requests=… seconds=… rate=… p50_ms=… p99_ms=… max_ms=… non_2xx=…`.
//!
//! cargo run --release --example loadgen -- --url http://127.0.0.1:8080 --requests 100000 --concurrency 64

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use cobalt_receiver::secret::Secret;
use cobalt_receiver::signature;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::body::Bytes;
use hyper::header::{self, HeaderName, HeaderValue};
use hyper_util::rt::TokioIo;

// The generator shares the cores with the server; keep its own cost low.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Mode {
    Ingest,
    Read,
}

#[derive(Parser, Debug)]
struct Args {
    /// Server address (plain http). Give it more than once, or a
    /// comma-separated list, to spread the connections round-robin over
    /// several servers (replicas sharing one database).
    #[arg(long, default_value = "http://127.0.0.1:8080", value_delimiter = ',')]
    url: Vec<String>,
    #[arg(long, value_enum, default_value = "ingest")]
    mode: Mode,
    /// Requests to send in all.
    #[arg(long, default_value_t = 10_000)]
    requests: usize,
    /// Connections, each with one request in flight.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Webhook secret the server accepts (a test value).
    #[arg(long, default_value = "whsec_bench_not_a_secret")]
    secret: String,
    /// API token the server accepts (a test value).
    #[arg(long, default_value = "bench-token-not-a-secret")]
    token: String,
    /// Makes ids unique to one run; `read` reuses an ingest run's prefix.
    #[arg(long, default_value = "run")]
    prefix: String,
    /// Share of ingest requests that re-send the previous event.
    #[arg(long, default_value_t = 0.05)]
    duplicate_share: f64,
    /// Share of new events that are `patient_note.failed`.
    #[arg(long, default_value_t = 0.2)]
    failed_share: f64,
    /// `read`: how many of the prefix's jobs to cycle through.
    #[arg(long, default_value_t = 10_000)]
    jobs: usize,
    /// `read`: ask this path every time instead of the prefix's jobs.
    #[arg(long)]
    path: Option<String>,
}

/// One prepared request: path, body, and the extra header it needs, all
/// parsed and validated before the clock starts.
struct Prepared {
    method: hyper::Method,
    path: hyper::Uri,
    body: Bytes,
    header: (HeaderName, HeaderValue),
}

fn prepare(args: &Args) -> Vec<Prepared> {
    let secret = Secret::new(args.secret.clone());
    let duplicate_every = share_to_period(args.duplicate_share);
    let failed_every = share_to_period(args.failed_share);
    let mut prepared: Vec<Prepared> = Vec::with_capacity(args.requests);
    let mut events = 0usize;
    for n in 0..args.requests {
        match args.mode {
            Mode::Ingest => {
                if duplicate_every.is_some_and(|p| n % p == p - 1) && n > 0 {
                    let previous = &prepared[n - 1];
                    prepared.push(Prepared {
                        method: hyper::Method::POST,
                        path: previous.path.clone(),
                        body: previous.body.clone(),
                        header: previous.header.clone(),
                    });
                    continue;
                }
                let failed = failed_every.is_some_and(|p| events % p == 0);
                let body = event(&args.prefix, events, failed);
                events += 1;
                let signature = signature::sign(&secret, body.as_bytes());
                prepared.push(Prepared {
                    method: hyper::Method::POST,
                    path: hyper::Uri::from_static("/webhooks/cobalt"),
                    body: Bytes::from(body),
                    header: (
                        HeaderName::from_static("cobalt-verification"),
                        HeaderValue::try_from(signature).expect("a hex signature"),
                    ),
                });
            }
            Mode::Read => prepared.push(Prepared {
                method: hyper::Method::GET,
                path: args
                    .path
                    .clone()
                    .unwrap_or_else(|| format!("/v1/jobs/{}-{}", args.prefix, n % args.jobs.max(1)))
                    .parse()
                    .expect("--path and --prefix make a valid path"),
                body: Bytes::new(),
                header: (
                    header::AUTHORIZATION,
                    HeaderValue::try_from(format!("Bearer {}", args.token))
                        .expect("--token fits in a header"),
                ),
            }),
        }
    }
    prepared
}

fn share_to_period(share: f64) -> Option<usize> {
    (share > 0.0).then(|| (1.0 / share).round().max(1.0) as usize)
}

/// A realistic event: ids, a subject and a few hundred bytes of note, and
/// `created` the moment the body is made, as Cobalt's is the moment the
/// event happened (so a later run's events are newer, as in production).
fn event(prefix: &str, n: usize, failed: bool) -> String {
    let created = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .expect("the current time formats as RFC 3339");
    let data = if failed {
        serde_json::json!({
            "patient_note_id": format!("pn_{prefix}_{n}"),
            "failure_reason": "The EMR rejected the note",
            "reasons": [{ "code": "emr_rejected", "description": "Encounter is locked" }]
        })
    } else {
        serde_json::json!({
            "patient_note_id": format!("pn_{prefix}_{n}"),
            "emr_note_id": format!("emr-{prefix}-{n}"),
            "patient_mrn": format!("MRN-{n:08}"),
            "location_id": "9b409d24-aa13-4ce5-a6b2-ea813eeb9530",
            "subject": "Wellness check-in",
            "note": "Patient reports feeling well since last visit. No new concerns to report. \
                     Blood pressure within range; continue current medication and follow up in \
                     three months. Discussed diet and exercise; patient agrees with the plan."
        })
    };
    serde_json::json!({
        "id": format!("evt_{prefix}_{n}"),
        "access_token_reference_id": "user_bench",
        "object": "event",
        "created": created,
        "type": if failed { "patient_note.failed" } else { "patient_note.created" },
        "job_id": format!("{prefix}-{n}"),
        "data": data
    })
    .to_string()
}

async fn worker(
    authority: String,
    prepared: Arc<Vec<Prepared>>,
    next: Arc<AtomicUsize>,
) -> (Vec<u32>, usize) {
    let stream = tokio::net::TcpStream::connect(&authority)
        .await
        .expect("connect");
    stream.set_nodelay(true).unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(connection);
    let host = HeaderValue::try_from(authority).expect("--url has a valid host");
    let json = HeaderValue::from_static("application/json");
    let (mut latencies_us, mut non_2xx) = (Vec::new(), 0usize);
    loop {
        let n = next.fetch_add(1, Ordering::Relaxed);
        let Some(request) = prepared.get(n) else {
            break;
        };
        let mut http = Request::new(Full::new(request.body.clone()));
        *http.method_mut() = request.method.clone();
        *http.uri_mut() = request.path.clone();
        let headers = http.headers_mut();
        headers.insert(header::HOST, host.clone());
        headers.insert(header::CONTENT_TYPE, json.clone());
        headers.insert(request.header.0.clone(), request.header.1.clone());
        let started = Instant::now();
        let response = sender.send_request(http).await.expect("send");
        let status = response.status();
        response.into_body().collect().await.expect("read body");
        latencies_us.push(started.elapsed().as_micros().min(u32::MAX as u128) as u32);
        if !status.is_success() {
            non_2xx += 1;
        }
    }
    (latencies_us, non_2xx)
}

fn main() {
    let args = Args::parse();
    let authorities: Vec<String> = args
        .url
        .iter()
        .map(|url| {
            url.trim_start_matches("http://")
                .trim_end_matches('/')
                .to_owned()
        })
        .collect();
    let prepared = Arc::new(prepare(&args));
    // One thread: the generator shares the cores with the server, and a
    // single-threaded scheduler costs it the least per request.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let results = runtime.block_on(async {
        let mut workers = tokio::task::JoinSet::new();
        for n in 0..args.concurrency {
            // Connection n goes to server n mod the number of servers.
            let authority = authorities[n % authorities.len()].clone();
            workers.spawn(worker(authority, prepared.clone(), next.clone()));
        }
        workers.join_all().await
    });
    let elapsed = started.elapsed();

    let mut latencies: Vec<u32> = results
        .iter()
        .flat_map(|(l, _)| l.iter().copied())
        .collect();
    let non_2xx: usize = results.iter().map(|(_, n)| n).sum();
    latencies.sort_unstable();
    let at = |q: f64| {
        let i = ((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len()) - 1;
        Duration::from_micros(latencies[i] as u64).as_secs_f64() * 1e3
    };
    println!(
        "mode={:?} concurrency={} requests={} seconds={:.3} rate={:.0} p50_ms={:.3} p99_ms={:.3} max_ms={:.3} non_2xx={}",
        args.mode,
        args.concurrency,
        latencies.len(),
        elapsed.as_secs_f64(),
        latencies.len() as f64 / elapsed.as_secs_f64(),
        at(0.50),
        at(0.99),
        at(1.0),
        non_2xx
    );
}
