//! The OpenAPI 3.1 document, generated from the handlers' annotations and
//! served at `GET /openapi.json`.

use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes::{audit, changes, health, status, submissions, webhooks};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "cobalt-receiver",
        description = "Receives signed Cobalt patient-note webhooks, keeps each job's final state, and answers status queries."
    ),
    paths(
        webhooks::receive_webhook,
        status::get_job,
        status::list_job_events,
        status::get_patient_note,
        status::list_patient_notes,
        status::metrics,
        changes::list_changes,
        submissions::register,
        submissions::submit,
        submissions::recover,
        audit::list_audit,
        health::health,
        health::ready,
    ),
    // Schemas of parameters are not collected from the paths.
    components(schemas(status::StatusFilter)),
    modifiers(&SecuritySchemes),
    tags(
        (name = "webhooks", description = "Cobalt's deliveries"),
        (name = "status", description = "Job states and the event log"),
        (name = "jobs", description = "Jobs expected: registration, submission to Cobalt, recovery of lost outcomes"),
        (name = "audit", description = "Who read what, searched, exported or ran recovery"),
        (name = "operation", description = "Health, readiness and metrics"),
    )
)]
pub struct ApiDoc;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "cobalt_signature",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "cobalt-verification",
                "Lowercase hex HMAC-SHA256 of the body (or of JavaScript's JSON.stringify of it), keyed with a webhook secret",
            ))),
        );
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}
