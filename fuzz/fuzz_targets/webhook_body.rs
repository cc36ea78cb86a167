//! Untrusted bytes through everything that reads a delivery before it is
//! stored: the signature check (raw and JavaScript forms), the UTF-8 check
//! and the event parser. Any panic is a finding.
#![no_main]

use cobalt_receiver::secret::Secret;
use cobalt_receiver::domain::event;
use cobalt_receiver::signature::{Verifier, sign};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let secret = Secret::new("whsec_test_fuzz");
    let verifier = Verifier::new(vec![secret.clone()]);
    // The first 64 bytes play the signature header, the rest the body.
    let (header, body) = data.split_at(data.len().min(64));
    let _ = verifier.verify(Some(header), body);
    // A body signed correctly must verify.
    let signature = sign(&secret, body);
    assert!(verifier.verify(Some(signature.as_bytes()), body).is_ok());
    if let Ok(text) = event::text(body) {
        let _ = event::parse(text, Some("evt_from_header"));
    }
});
