//! Who may call what: every route of the router and of the OpenAPI
//! document against one explicit table, each permission tried alone; and
//! MRNs, whole only for `phi`, each such answer on the audit trail.

use std::collections::BTreeSet;

use cobalt_receiver::auth::Permission;
use cobalt_receiver::secret::Secret;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::console::{Browser, audit_rows, console_on, minutes_ago};
use crate::helpers::*;

/// Every route behind a token, and the one permission it needs.
const PROTECTED: [(&str, &str, Permission); 10] = [
    ("GET", "/v1/jobs/{job_id}", Permission::Read),
    ("GET", "/v1/changes", Permission::Read),
    ("GET", "/v1/jobs/{job_id}/events", Permission::Read),
    ("GET", "/v1/patient-notes", Permission::Read),
    (
        "GET",
        "/v1/patient-notes/{patient_note_id}",
        Permission::Read,
    ),
    ("GET", "/metrics", Permission::Read),
    ("PUT", "/v1/jobs/{job_id}", Permission::Submit),
    ("POST", "/v1/patient-notes", Permission::Submit),
    ("POST", "/v1/recoveries", Permission::Operate),
    ("GET", "/v1/audit", Permission::Operate),
];

/// Routes open to all (the webhook checks its own signature).
const OPEN: [(&str, &str); 4] = [
    ("POST", "/webhooks/cobalt"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/openapi.json"),
];

/// The status and, when JSON, the body of `method path` with `token`.
async fn try_route(
    app: &TestApp,
    method: &Method,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> (StatusCode, Value) {
    let mut request = app
        .client
        .request(method.clone(), format!("{}{path}", app.address));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// A token that holds exactly one permission.
fn single(permission: Permission) -> String {
    format!("tok-only-{}-not-a-secret", permission.as_str())
}

#[tokio::test]
async fn every_route_needs_the_permission_the_table_names_and_no_other() {
    // The router's own rules are the table.
    let rules: BTreeSet<_> = cobalt_receiver::routes::api_routes()
        .rules()
        .iter()
        .map(|rule| (rule.method, rule.path, rule.permission.as_str()))
        .collect();
    let table: BTreeSet<_> = PROTECTED
        .iter()
        .map(|(method, path, permission)| (*method, *path, permission.as_str()))
        .collect();
    assert_eq!(rules, table);

    let app = spawn_app_with(|config| {
        config.api_tokens = Permission::ALL
            .iter()
            .map(|p| Secret::new(format!("only-{}:{}:{}", p.as_str(), p.as_str(), single(*p))))
            .collect();
    })
    .await;

    // The OpenAPI document names the same routes, no more, no fewer.
    let (_, doc) = json_of(app.get_with("/openapi.json", None).await).await;
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.insert((method.to_uppercase(), path.clone()));
        }
    }
    let routed: BTreeSet<_> = PROTECTED
        .iter()
        .map(|(m, p, _)| (m.to_string(), p.to_string()))
        .chain(
            OPEN.iter()
                .filter(|(_, path)| *path != "/openapi.json")
                .map(|(m, p)| (m.to_string(), p.to_string())),
        )
        .collect();
    assert_eq!(documented, routed);

    for (method, template, needed) in PROTECTED {
        let path = template
            .replace("{job_id}", "4242")
            .replace("{patient_note_id}", "pn-4242");
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let body = (method != Method::GET).then(|| json!({}));
        let (status, _) = try_route(&app, &method, &path, None, body.as_ref()).await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "{method} {path} without a token"
        );
        for held in Permission::ALL {
            let token = single(held);
            let (status, answer) =
                try_route(&app, &method, &path, Some(&token), body.as_ref()).await;
            if held == needed {
                assert_ne!(
                    status,
                    StatusCode::FORBIDDEN,
                    "{method} {path} with {held:?}: {answer}"
                );
                assert_ne!(
                    status,
                    StatusCode::UNAUTHORIZED,
                    "{method} {path} with {held:?}"
                );
            } else {
                assert_eq!(
                    status,
                    StatusCode::FORBIDDEN,
                    "{method} {path} with only {held:?}: {answer}"
                );
                assert!(
                    answer["detail"].as_str().unwrap().contains(needed.as_str()),
                    "{answer}"
                );
            }
        }
    }
    for (method, path) in OPEN {
        if method == "GET" {
            let status = app.get_with(path, None).await.status();
            assert_eq!(status, 200, "{path} is open");
        }
    }
}

/// The MRN each token sees of a job, through each route that returns jobs.
async fn mrns_seen(app: &TestApp, token: &str) -> Vec<String> {
    let mut seen = Vec::new();
    let (status, job) = app
        .call(Method::GET, "/v1/jobs/5151", Some(token), None, &[])
        .await;
    assert_eq!(status, 200, "{job}");
    seen.push(job["patient_mrn"].as_str().unwrap().to_owned());
    let (_, note) = app
        .call(
            Method::GET,
            "/v1/patient-notes/pn-5151",
            Some(token),
            None,
            &[],
        )
        .await;
    seen.push(note["jobs"][0]["patient_mrn"].as_str().unwrap().to_owned());
    let (_, page) = app
        .call(
            Method::GET,
            "/v1/patient-notes?limit=500",
            Some(token),
            None,
            &[],
        )
        .await;
    seen.push(page["items"][0]["patient_mrn"].as_str().unwrap().to_owned());
    seen
}

#[tokio::test]
async fn mrns_are_masked_unless_the_token_may_see_phi_and_such_reads_are_audited() {
    let app = spawn_app_with(console_on).await;
    let event = created_event("evt_phi", "5151", "pn-5151", &minutes_ago(1));
    assert_eq!(app.post_webhook(&event.to_string()).await.status(), 200);
    let masked = format!("***{}", &MRN[MRN.len() - 4..]);
    for token in [TOKEN, SUBMIT_TOKEN, OPS_TOKEN] {
        assert_eq!(
            mrns_seen(&app, token).await,
            vec![masked.clone(); 3],
            "{token}"
        );
    }
    assert!(audit_rows(&app, "api.phi.read").await.is_empty());

    assert_eq!(mrns_seen(&app, PHI_TOKEN).await, vec![MRN.to_owned(); 3]);
    let rows = audit_rows(&app, "api.phi.read").await;
    assert_eq!(rows.len(), 3, "{rows:?}");
    for row in &rows {
        assert_eq!(row["actor"], "records");
        assert_eq!(row["target"], "jobs 5151");
    }

    // A registration's answer masks it whoever asks.
    let (status, job) = app
        .call(
            Method::PUT,
            "/v1/jobs/5151",
            Some(SUBMIT_TOKEN),
            Some(&json!({ "patient_note_id": "pn-5151" })),
            &[],
        )
        .await;
    assert_eq!(status, 200, "{job}");
    assert_eq!(job["patient_mrn"], Value::String(masked.clone()));

    // The console's reveal needs phi too.
    let reader = Browser::signed_in(&app, OPS_TOKEN).await;
    let page = reader.get("/ui/jobs/5151").await;
    assert!(page.body.contains(&masked), "{}", page.body);
    assert!(!page.body.contains("Reveal (recorded)"));
    let refused = reader
        .post("/ui/jobs/5151/reveal-mrn", &[("csrf", &reader.csrf)])
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(!refused.body.contains(MRN));
    let records = Browser::signed_in(&app, PHI_TOKEN).await;
    let revealed = records
        .post("/ui/jobs/5151/reveal-mrn", &[("csrf", &records.csrf)])
        .await;
    assert_eq!(revealed.status, StatusCode::OK);
    assert!(revealed.body.contains(MRN));
    let rows = audit_rows(&app, "console.mrn.reveal").await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["actor"], "records");
}
