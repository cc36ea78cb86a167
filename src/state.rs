//! What the handlers of both ports share, the webhook's and API's routes
//! and the console's alike: the store, the checks of signatures and
//! tokens, Cobalt's client, the audit trail and the counters a request
//! reads or updates.

use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;

use crate::audit::Audit;
use crate::auth::ApiTokens;
use crate::capacity::Places;
use crate::cobalt;
use crate::pagination::Cursors;
use crate::reconcile::Reconciler;
use crate::signature::{SignatureRejections, Verifier};
use crate::store::Store;

/// What the handlers share: one allocation behind an `Arc`, so the copy
/// every handler and middleware takes is a single reference count.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The parts of [`AppState`].
pub struct Shared {
    pub store: Store,
    /// `None` when unsigned deliveries are allowed.
    pub verifier: Option<Arc<Verifier>>,
    pub api_tokens: Arc<ApiTokens>,
    pub body_limit: usize,
    pub metrics: PrometheusHandle,
    pub cursors: Cursors,
    /// How long a registered job may be pending before it is overdue.
    pub overdue_after: Duration,
    /// Cobalt's API, when credentials are configured.
    pub cobalt: Option<Arc<cobalt::Client>>,
    pub reconciler: Option<Arc<Reconciler>>,
    /// Who read which job or note (and, from the console, what else).
    pub audit: Audit,
    pub signature_rejections: Arc<SignatureRejections>,
    /// Places for clients waiting for an outcome.
    pub waiters: Arc<Places>,
    /// The outgoing webhooks' endpoints.
    pub outbound: Arc<[crate::config::OutboundEndpoint]>,
    /// The clinic's opening hours, for the metric alerts read.
    pub clinic: crate::clinic_hours::ClinicClock,
}
