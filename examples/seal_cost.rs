//! What keeping patient data costs a delivery, apart from everything else:
//! the time to seal a minimal payload of the load generator's size and an
//! MRN under a key, and to make the minimal payload from the positions the
//! envelope's parse found, per delivery, medians of 9 runs of 100,000.
//!
//!   cargo run --release --example seal_cost

use std::time::Instant;

use cobalt_receiver::payload_storage::PayloadStorage;
use cobalt_receiver::sealing::{Keyring, Place};
use cobalt_receiver::secret::Secret;

fn main() {
    let keys = Keyring::parse(&[Secret::new(
        "k1:YmVuY2gta2V5LW5vdC1hLXNlY3JldC0wMDAwMDAwMDE=",
    )])
    .expect("a well-formed key");
    let body = serde_json::json!({
        "id": "evt_bench_000001", "access_token_reference_id": "user_bench", "object": "event",
        "created": "2026-12-04T10:00:00Z", "type": "patient_note.created", "job_id": "1",
        "data": {
            "patient_note_id": "pn_bench_1", "emr_note_id": "emr-bench-1",
            "patient_mrn": "MRN-00000001", "location_id": "9b409d24-aa13-4ce5-a6b2-ea813eeb9530",
            "subject": "Wellness check-in",
            "note": "Patient reports feeling well since last visit. No new concerns to report. ".repeat(4),
        }
    })
    .to_string();
    let located = cobalt_receiver::domain::event::parse(&body, None)
        .expect("the body parses")
        .patient_data;
    let minimal = PayloadStorage::Minimal
        .kept(&body, located.as_deref())
        .into_owned();
    let rounds = 100_000u32;
    let mut per_delivery = Vec::new();
    let mut minimize = Vec::new();
    for _ in 0..9 {
        let started = Instant::now();
        for n in 0..rounds {
            let event_id = if n % 2 == 0 { "evt_a" } else { "evt_b" };
            let payload = keys.seal(Place::Payload { event_id }, minimal.as_bytes());
            let mrn = keys.keep(
                Place::Mrn {
                    patient_note_id: "pn_bench_1",
                    job_id: "1",
                },
                "MRN-00000001".to_owned(),
            );
            std::hint::black_box((payload, mrn));
        }
        per_delivery.push(started.elapsed().as_nanos() as f64 / f64::from(rounds));
        let started = Instant::now();
        for _ in 0..rounds {
            let body = std::hint::black_box(&body);
            std::hint::black_box(PayloadStorage::Minimal.kept(body, located.as_deref()));
        }
        minimize.push(started.elapsed().as_nanos() as f64 / f64::from(rounds));
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    println!(
        "body {} bytes, minimal {} bytes: sealing payload and MRN {:.0} ns a delivery; minimal payload {:.0} ns",
        body.len(),
        minimal.len(),
        median(&mut per_delivery),
        median(&mut minimize)
    );
}
