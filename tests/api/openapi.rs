//! `GET /openapi.json`: an OpenAPI 3.1 document of every route, open to all.

use crate::helpers::*;

#[tokio::test]
async fn the_openapi_document_covers_every_route_and_both_security_schemes() {
    let app = spawn_app().await;
    let (status, doc) = json_of(app.get_with("/openapi.json", None).await).await;
    assert_eq!(status, 200);
    assert_eq!(doc["openapi"], "3.1.0");

    let operations = [
        ("post", "/webhooks/cobalt", Some("cobalt_signature")),
        ("get", "/v1/jobs/{job_id}", Some("bearer")),
        ("get", "/v1/jobs/{job_id}/events", Some("bearer")),
        ("get", "/v1/patient-notes", Some("bearer")),
        ("get", "/v1/patient-notes/{patient_note_id}", Some("bearer")),
        ("get", "/metrics", Some("bearer")),
        ("put", "/v1/jobs/{job_id}", Some("bearer")),
        ("post", "/v1/patient-notes", Some("bearer")),
        ("post", "/v1/recoveries", Some("bearer")),
        ("get", "/v1/audit", Some("bearer")),
        ("get", "/v1/changes", Some("bearer")),
        ("get", "/healthz", None),
        ("get", "/readyz", None),
    ];
    for (method, path, security) in operations {
        let operation = &doc["paths"][path][method];
        assert!(operation.is_object(), "{method} {path} is not documented");
        let declared: Vec<&str> = operation["security"]
            .as_array()
            .map(|list| {
                list.iter()
                    .filter_map(|s| s.as_object()?.keys().next().map(String::as_str))
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(
            declared,
            security.into_iter().collect::<Vec<_>>(),
            "{method} {path}"
        );
        if security.is_some() {
            assert!(
                operation["responses"]["401"].is_object(),
                "{method} {path} documents no 401"
            );
        }
    }
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["cobalt_signature"]["in"], "header");
    assert_eq!(schemes["cobalt_signature"]["name"], "cobalt-verification");
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
    for schema in [
        "ErrorBody",
        "Receipt",
        "JobState",
        "EventSummary",
        "Page",
        "WebhookEvent",
        "AuditPage",
    ] {
        assert!(
            doc["components"]["schemas"][schema].is_object(),
            "no {schema} schema"
        );
    }
    let paths: std::collections::HashSet<&str> =
        operations.iter().map(|(_, path, _)| *path).collect();
    assert_eq!(doc["paths"].as_object().map(|p| p.len()), Some(paths.len()));

    // Every reference resolves.
    let mut references = Vec::new();
    collect_references(&doc, &mut references);
    assert!(!references.is_empty());
    for reference in references {
        let pointer = reference.trim_start_matches('#');
        assert!(
            doc.pointer(pointer).is_some(),
            "{reference} does not resolve"
        );
    }
}

/// The document, from a running server.
async fn document() -> serde_json::Value {
    let app = spawn_app().await;
    let (status, doc) = json_of(app.get_with("/openapi.json", None).await).await;
    assert_eq!(status, 200);
    doc
}

/// Every operation: (method, path, operation).
fn operations(doc: &serde_json::Value) -> Vec<(String, String, &serde_json::Value)> {
    let mut found = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("a path item") {
            found.push((method.clone(), path.clone(), operation));
        }
    }
    found
}

/// A schema with its `$ref` followed, and a nullable one's (`oneOf` with
/// `null`) non-null part.
fn resolve<'a>(doc: &'a serde_json::Value, schema: &'a serde_json::Value) -> &'a serde_json::Value {
    if let Some(reference) = schema["$ref"].as_str() {
        let target = doc
            .pointer(reference.trim_start_matches('#'))
            .unwrap_or_else(|| panic!("{reference} does not resolve"));
        return resolve(doc, target);
    }
    for combinator in ["oneOf", "anyOf", "allOf"] {
        if let Some(parts) = schema[combinator].as_array() {
            let non_null: Vec<_> = parts.iter().filter(|p| p["type"] != "null").collect();
            if let [only] = non_null.as_slice() {
                return resolve(doc, only);
            }
        }
    }
    schema
}

/// Every property of every component schema: (schema, property, its
/// resolved schema).
fn properties(doc: &serde_json::Value) -> Vec<(String, String, &serde_json::Value)> {
    let mut found = Vec::new();
    for (name, schema) in doc["components"]["schemas"].as_object().expect("schemas") {
        if let Some(props) = schema["properties"].as_object() {
            for (property, value) in props {
                found.push((name.clone(), property.clone(), resolve(doc, value)));
            }
        }
    }
    found
}

#[tokio::test]
async fn every_route_behind_a_token_declares_401_403_and_503_with_the_error_body() {
    let doc = document().await;
    let mut guarded = 0;
    for (method, path, operation) in operations(&doc) {
        let Some(security) = operation["security"].as_array() else {
            continue;
        };
        if !security.iter().any(|s| s.get("bearer").is_some()) {
            continue;
        }
        guarded += 1;
        // 403: a token without the route's permission (a submit-only token
        // on a read route); 503: the time limit every request has.
        for status in ["401", "403", "503"] {
            let response = &operation["responses"][status];
            assert_eq!(
                response["content"]["application/json"]["schema"]["$ref"],
                "#/components/schemas/ErrorBody",
                "{method} {path} does not declare {status} with the error body"
            );
        }
    }
    assert_eq!(guarded, 10, "routes behind a bearer token");
}

#[tokio::test]
async fn every_status_a_route_answers_beyond_the_guard_is_declared() {
    let doc = document().await;
    let declared = |method: &str, path: &str| -> Vec<String> {
        doc["paths"][path][method]["responses"]
            .as_object()
            .unwrap_or_else(|| panic!("{method} {path}"))
            .keys()
            .cloned()
            .collect()
    };
    let expected: [(&str, &str, &[&str]); 12] = [
        (
            "post",
            "/webhooks/cobalt",
            &["200", "400", "401", "413", "422", "503"],
        ),
        (
            "get",
            "/v1/jobs/{job_id}",
            &["200", "400", "404", "409", "503"],
        ),
        (
            "get",
            "/v1/jobs/{job_id}/events",
            &["200", "400", "404", "503"],
        ),
        ("get", "/v1/patient-notes", &["200", "400", "503"]),
        (
            "get",
            "/v1/patient-notes/{patient_note_id}",
            &["200", "400", "404", "503"],
        ),
        ("get", "/metrics", &["200", "503"]),
        (
            "put",
            "/v1/jobs/{job_id}",
            &["200", "201", "400", "409", "503"],
        ),
        (
            "post",
            "/v1/patient-notes",
            // 4XX: Cobalt's refusal relayed with its status.
            &[
                "202", "400", "404", "409", "413", "422", "429", "4XX", "502", "503", "504",
            ],
        ),
        ("post", "/v1/recoveries", &["200", "400", "413", "503"]),
        ("get", "/v1/audit", &["200", "400", "503"]),
        ("get", "/healthz", &["200"]),
        ("get", "/readyz", &["200", "503"]),
    ];
    for (method, path, statuses) in expected {
        let declared = declared(method, path);
        for status in statuses {
            assert!(
                declared.iter().any(|d| d == status),
                "{method} {path} does not declare {status}"
            );
        }
    }
}

#[tokio::test]
async fn every_timestamp_says_date_time_and_every_day_says_date() {
    let doc = document().await;
    // Timestamps whose names do not end in `_at`.
    let timestamps = [
        ("JobState", "deciding_event_created"),
        ("EventSummary", "created"),
        ("WebhookEvent", "created"),
        ("AuditRow", "at"),
    ];
    let mut checked = 0;
    for (schema, property, value) in properties(&doc) {
        let named = timestamps.contains(&(schema.as_str(), property.as_str()));
        if property.ends_with("_at") || named {
            checked += 1;
            assert_eq!(value["format"], "date-time", "{schema}.{property}: {value}");
        }
    }
    // submitted_at (twice), first_received_at, last_received_at,
    // received_at and the four above.
    assert_eq!(checked, 9);
    for schema in ["Report", "RecoveryRequest"] {
        let since = resolve(
            &doc,
            &doc["components"]["schemas"][schema]["properties"]["since"],
        );
        assert_eq!(since["format"], "date", "{schema}.since");
    }
}

#[tokio::test]
async fn closed_sets_are_enums() {
    let doc = document().await;
    let values = |schema: &str, property: &str| -> Vec<String> {
        let value = resolve(
            &doc,
            &doc["components"]["schemas"][schema]["properties"][property],
        );
        let mut values: Vec<String> = value["enum"]
            .as_array()
            .unwrap_or_else(|| panic!("{schema}.{property} is not an enum: {value}"))
            .iter()
            .map(|v| v.as_str().expect("a string").to_owned())
            .collect();
        values.sort();
        values
    };
    assert_eq!(
        values("JobState", "status"),
        ["created", "failed", "pending"]
    );
    assert_eq!(
        values("Receipt", "status"),
        ["applied", "duplicate", "ignored", "superseded"]
    );
    assert_eq!(
        values("Receipt", "original_outcome"),
        ["applied", "ignored", "rejected", "superseded"]
    );
    assert_eq!(
        values("EventSummary", "outcome"),
        ["applied", "ignored", "rejected", "superseded"]
    );
    assert_eq!(values("EventSummary", "source"), ["recovered", "webhook"]);
    assert_eq!(values("HealthStatus", "status"), ["ok", "ready"]);
    // No other property by these names slips through as free text.
    for (schema, property, value) in properties(&doc) {
        if ["status", "outcome", "original_outcome", "source"].contains(&property.as_str()) {
            assert!(value["enum"].is_array(), "{schema}.{property}: {value}");
        }
    }
}

#[tokio::test]
async fn failure_reasons_have_a_schema_that_lets_other_fields_through() {
    let doc = document().await;
    let reasons = resolve(
        &doc,
        &doc["components"]["schemas"]["JobState"]["properties"]["reasons"],
    );
    let item = resolve(&doc, &reasons["items"]);
    assert_eq!(item["type"], "object", "{item}");
    for field in ["code", "description"] {
        let value = resolve(&doc, &item["properties"][field]);
        assert!(
            value["type"] == "string"
                || value["type"]
                    .as_array()
                    .is_some_and(|t| t.contains(&"string".into())),
            "reasons[].{field}: {value}"
        );
    }
    // Kept and returned as Cobalt sent them: other fields pass through.
    assert_ne!(item["additionalProperties"], false);
}

#[tokio::test]
async fn a_replayed_submission_s_header_is_declared() {
    let doc = document().await;
    let header = &doc["paths"]["/v1/patient-notes"]["post"]["responses"]["202"]["headers"]["idempotent-replayed"];
    assert_eq!(header["schema"]["type"], "string", "{header}");
    // Only a submission replays.
    for (method, path, operation) in operations(&doc) {
        if (method.as_str(), path.as_str()) == ("post", "/v1/patient-notes") {
            continue;
        }
        for (status, response) in operation["responses"].as_object().expect("responses") {
            assert!(
                response["headers"]["idempotent-replayed"].is_null(),
                "{method} {path} {status}"
            );
        }
    }
}

fn collect_references(value: &serde_json::Value, into: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("$ref", serde_json::Value::String(reference)) => into.push(reference.clone()),
                    _ => collect_references(value, into),
                }
            }
        }
        serde_json::Value::Array(items) => {
            items.iter().for_each(|item| collect_references(item, into))
        }
        _ => {}
    }
}
