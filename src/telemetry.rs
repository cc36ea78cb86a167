//! Logs and traces.
//!
//! Logs: `tracing` to standard error, filtered by `RUST_LOG` when set, else
//! by the configured `log_filter`; as text, or as one JSON object a line
//! carrying the request's span (request id, route) with each event.
//!
//! Traces: off unless the standard OpenTelemetry variables (or
//! `otlp_endpoint`) name a collector. The service's spans are then exported
//! over OTLP (HTTP with protobuf, or gRPC) in batches by the SDK's own
//! thread, so a slow or absent collector never holds up a request: a full
//! queue drops spans, not deliveries. Spans carry ids, routes, statuses and
//! counts, never a note's text, subject or MRN.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig, WithTonicConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Span;
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Event, Metadata};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::layer::{Context as LayerContext, Filter};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use crate::config::LogFormat;

/// The service's name in traces when `OTEL_SERVICE_NAME` gives none.
const SERVICE_NAME: &str = "cobalt-receiver";

static TRACES_ON: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported: the cheap test that keeps trace-only work
/// (reading an incoming `traceparent`, naming spans) off the path when not.
pub fn traces_on() -> bool {
    TRACES_ON.load(Ordering::Relaxed)
}

/// What is installed; [`Telemetry::shutdown`] sends the spans still queued.
#[must_use = "shut it down at exit, or the last spans are lost"]
pub struct Telemetry {
    traces: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Sends what is queued (within the SDK's export timeout), off the
    /// async runtime's threads.
    pub async fn shutdown(self) {
        if let Some(provider) = self.traces {
            let _ = tokio::task::spawn_blocking(move || {
                if let Err(error) = provider.shutdown() {
                    tracing::warn!(error = %error, "sending the last traces failed");
                }
            })
            .await;
        }
    }
}

/// Where traces go, when they are on.
#[derive(Debug, PartialEq, Eq)]
pub struct TraceExport {
    pub protocol: Protocol,
    /// The configuration's endpoint, when no standard variable names one
    /// (the exporter reads those itself). For HTTP, the traces path is
    /// added, as the exporter does to `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub endpoint: Option<String>,
}

/// Whether traces are on, and how they are sent: from the standard
/// variables (`lookup` reads the environment) and `otlp_endpoint`.
pub fn trace_export(
    lookup: impl Fn(&str) -> Option<String>,
    configured: Option<&str>,
) -> Result<Option<TraceExport>, String> {
    let set = |name: &str| lookup(name).filter(|value| !value.trim().is_empty());
    if set("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
        return Ok(None);
    }
    match set("OTEL_TRACES_EXPORTER").as_deref().map(str::trim) {
        None | Some("otlp") => {}
        Some("none") => return Ok(None),
        Some(other) => {
            return Err(format!(
                "OTEL_TRACES_EXPORTER: `{other}` is not supported; use otlp or none"
            ));
        }
    }
    let protocol_variable = [
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ]
    .into_iter()
    .find_map(|name| set(name).map(|value| (name, value)));
    let protocol = match protocol_variable {
        None => Protocol::HttpBinary,
        Some((_, value)) if value.trim() == "http/protobuf" => Protocol::HttpBinary,
        Some((_, value)) if value.trim() == "grpc" => Protocol::Grpc,
        Some((name, value)) => {
            return Err(format!(
                "{name}: `{}` is not supported; use http/protobuf or grpc",
                value.trim()
            ));
        }
    };
    let from_environment = set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some()
        || set("OTEL_EXPORTER_OTLP_ENDPOINT").is_some();
    let configured = configured.map(str::trim).filter(|c| !c.is_empty());
    if !from_environment && configured.is_none() {
        return Ok(None);
    }
    let endpoint = match (from_environment, configured, protocol) {
        (true, _, _) | (false, None, _) => None,
        (false, Some(base), Protocol::Grpc) => Some(base.to_owned()),
        (false, Some(base), _) => Some(format!("{}/v1/traces", base.trim_end_matches('/'))),
    };
    Ok(Some(TraceExport { protocol, endpoint }))
}

/// Installs the global subscriber: logs always, traces when `traces` says
/// where. Fails on a filter that does not parse, or an exporter that
/// cannot be built (an endpoint that is not a URL).
pub fn init(
    log_filter: &str,
    format: LogFormat,
    traces: Option<TraceExport>,
) -> Result<Telemetry, String> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(value) if !value.is_empty() => {
            EnvFilter::try_new(&value).map_err(|e| format!("RUST_LOG: {e}"))?
        }
        _ => EnvFilter::try_new(log_filter)
            .map_err(|e| format!("configuration key `log_filter`: {e}"))?,
    };
    // The two log formats' layers, made where each is composed (a layer's
    // type names what it is composed onto).
    macro_rules! text {
        () => {
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal())
        };
    }
    macro_rules! json {
        () => {
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .json()
                .with_current_span(true)
                .with_span_list(false)
        };
    }
    let provider = traces.map(tracer_provider).transpose()?;
    let installed = match &provider {
        // Logs alone: the filter applies to everything, the cheapest
        // composition (no per-layer bookkeeping on each span and event).
        None => tracing_subscriber::registry()
            .with(filter)
            .with(matches!(format, LogFormat::Text).then(|| text!()))
            .with(matches!(format, LogFormat::Json).then(|| json!()))
            .try_init(),
        // Logs and traces, each with its own filter, asked at every span
        // and event (see `AskedEachTime`).
        Some(provider) => {
            // The service's own spans, the detailed (debug) ones too, and
            // no log events: what a span says is chosen where it is made.
            let ours = tracing_subscriber::filter::filter_fn(|metadata| {
                metadata.is_span()
                    && metadata.target().starts_with("cobalt_receiver")
                    && *metadata.level() <= tracing::Level::DEBUG
            });
            // A span's parent is the `tracing` span it was made in, not
            // an OpenTelemetry context kept per thread: a request's work
            // moves between the runtime's threads.
            let spans = tracing_opentelemetry::layer()
                .with_tracer(provider.tracer(SERVICE_NAME))
                .with_context_activation(false)
                .with_filter(AskedEachTime(ours));
            let logs: Box<dyn Layer<Registry> + Send + Sync> = match format {
                LogFormat::Text => text!().with_filter(AskedEachTime(filter)).boxed(),
                LogFormat::Json => json!().with_filter(AskedEachTime(filter)).boxed(),
            };
            tracing_subscriber::registry()
                .with(logs)
                .with(spans)
                .try_init()
        }
    };
    installed.map_err(|e| e.to_string())?;
    TRACES_ON.store(provider.is_some(), Ordering::Relaxed);
    Ok(Telemetry { traces: provider })
}

/// A per-layer filter asked at every span and event, never answered from
/// the callsite's cache. Each filter's answer reaches its layer through a
/// thread-local that `enabled` sets; a callsite cached as always wanted
/// skips `enabled`, and its span then reads what an unrelated check left
/// there. The `log` crate's checks do that (sqlx asks `log_enabled!` after
/// each query), and the trace layer lost request spans at random on
/// PostgreSQL (tokio-rs/tracing#2519).
struct AskedEachTime<F>(F);

impl<S, F: Filter<S>> Filter<S> for AskedEachTime<F> {
    fn enabled(&self, metadata: &Metadata<'_>, cx: &LayerContext<'_, S>) -> bool {
        self.0.enabled(metadata, cx)
    }

    fn callsite_enabled(&self, metadata: &'static Metadata<'static>) -> Interest {
        match self.0.callsite_enabled(metadata) {
            never if never.is_never() => never,
            _ => Interest::sometimes(),
        }
    }

    fn event_enabled(&self, event: &Event<'_>, cx: &LayerContext<'_, S>) -> bool {
        self.0.event_enabled(event, cx)
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        self.0.max_level_hint()
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, cx: LayerContext<'_, S>) {
        self.0.on_new_span(attrs, id, cx);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, cx: LayerContext<'_, S>) {
        self.0.on_record(id, values, cx);
    }

    fn on_enter(&self, id: &Id, cx: LayerContext<'_, S>) {
        self.0.on_enter(id, cx);
    }

    fn on_exit(&self, id: &Id, cx: LayerContext<'_, S>) {
        self.0.on_exit(id, cx);
    }

    fn on_close(&self, id: Id, cx: LayerContext<'_, S>) {
        self.0.on_close(id, cx);
    }
}

fn tracer_provider(export: TraceExport) -> Result<SdkTracerProvider, String> {
    let exporter = match export.protocol {
        Protocol::Grpc => {
            let mut builder = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_tls_config(
                    opentelemetry_otlp::tonic_types::transport::ClientTlsConfig::new()
                        .with_webpki_roots(),
                );
            if let Some(endpoint) = export.endpoint {
                builder = builder.with_endpoint(endpoint);
            }
            builder.build()
        }
        _ => {
            let mut builder = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(Protocol::HttpBinary);
            if let Some(endpoint) = export.endpoint {
                builder = builder.with_endpoint(endpoint);
            }
            builder.build()
        }
    }
    .map_err(|e| format!("OpenTelemetry: {e}"))?;
    // OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES are read by the
    // resource's own detectors; the service's name is the fallback.
    let named = std::env::var("OTEL_SERVICE_NAME").is_ok_and(|v| !v.trim().is_empty())
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|v| v.contains("service.name="));
    let mut resource = opentelemetry_sdk::Resource::builder();
    if !named {
        resource = resource.with_service_name(SERVICE_NAME);
    }
    // The sampler (OTEL_TRACES_SAMPLER, _ARG) and the batches (OTEL_BSP_*)
    // are the SDK's defaults, which read their variables.
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build())
}

/// Makes `span` continue the W3C trace context (`traceparent`) of an
/// incoming request, when traces are on.
pub fn continue_trace(span: &Span, headers: &HeaderMap) {
    if traces_on() {
        let parent = TraceContextPropagator::new().extract(&Incoming(headers));
        let _ = span.set_parent(parent);
    }
}

/// The `traceparent` (and `tracestate`) of `span` for an outgoing
/// request; none when traces are off.
pub fn trace_headers(span: &Span) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if traces_on() {
        TraceContextPropagator::new().inject_context(&span.context(), &mut Outgoing(&mut headers));
    }
    headers
}

struct Incoming<'a>(&'a HeaderMap);

impl Extractor for Incoming<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

struct Outgoing<'a>(&'a mut HeaderMap);

impl Injector for Outgoing<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn export(
        variables: &[(&str, &str)],
        configured: Option<&str>,
    ) -> Result<Option<TraceExport>, String> {
        let variables: Vec<(String, String)> = variables
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        trace_export(
            |name| {
                variables
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.clone())
            },
            configured,
        )
    }

    #[test]
    fn traces_are_off_unless_an_endpoint_is_named() {
        assert_eq!(export(&[], None), Ok(None));
        assert_eq!(export(&[("OTEL_SERVICE_NAME", "x")], None), Ok(None));
        assert_eq!(
            export(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")], Some("")),
            Ok(None)
        );
        let on = export(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")], None).unwrap();
        assert_eq!(
            on,
            Some(TraceExport {
                protocol: Protocol::HttpBinary,
                endpoint: None
            })
        );
        let traces_only = export(
            &[(
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://c:4318/v1/traces",
            )],
            None,
        );
        assert!(matches!(traces_only, Ok(Some(_))));
    }

    #[test]
    fn the_standard_variables_win_over_the_configured_endpoint() {
        let mirrored = export(&[], Some("http://collector:4318/"))
            .unwrap()
            .unwrap();
        assert_eq!(
            mirrored.endpoint.as_deref(),
            Some("http://collector:4318/v1/traces")
        );
        let grpc = export(
            &[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")],
            Some("http://collector:4317"),
        )
        .unwrap()
        .unwrap();
        assert_eq!(grpc.protocol, Protocol::Grpc);
        assert_eq!(grpc.endpoint.as_deref(), Some("http://collector:4317"));
        let environment = export(
            &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://other:4318")],
            Some("http://collector:4318"),
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            environment.endpoint, None,
            "the exporter reads the variable itself"
        );
    }

    #[test]
    fn disabled_none_and_unsupported_choices() {
        let on = [("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")];
        let with = |extra: (&'static str, &'static str)| export(&[on[0], extra], None);
        assert_eq!(with(("OTEL_SDK_DISABLED", "TRUE")), Ok(None));
        assert_eq!(with(("OTEL_TRACES_EXPORTER", "none")), Ok(None));
        assert!(
            with(("OTEL_TRACES_EXPORTER", "zipkin"))
                .unwrap_err()
                .contains("OTEL_TRACES_EXPORTER")
        );
        let json = with(("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")).unwrap_err();
        assert!(
            json.contains("OTEL_EXPORTER_OTLP_PROTOCOL") && json.contains("http/json"),
            "{json}"
        );
        let traces = export(
            &[
                on[0],
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
                ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf"),
            ],
            None,
        );
        assert_eq!(traces.unwrap().unwrap().protocol, Protocol::HttpBinary);
    }
}
