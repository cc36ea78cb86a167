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
