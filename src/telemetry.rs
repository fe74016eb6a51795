//! Logs and traces: the subscriber the binary installs, and the request phases.
//!
//! Each HTTP request runs in a `request` span (repository, service, protocol, user,
//! session id); the work inside it runs in child spans named by phase (`auth`,
//! `manifest`, `negotiate`, `walk`, `pack`, `receive`, `index`, `check`, `store`,
//! `swap`, ...). [`PhaseTimes`] adds up how long each phase took into its request span,
//! and the request's log line, written when its response ends, lists them
//! ([`phases_of`]).

use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::span::{Attributes, Id};
use tracing::{Span, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

/// The name of the span each HTTP request runs in.
pub const REQUEST: &str = "request";

/// When a span began.
struct Began(Instant);

/// The phase times of a request, in the order phases first ended.
#[derive(Default)]
struct Phases(Mutex<Vec<(&'static str, Duration)>>);

/// A layer that adds the time of every span under a `request` span into it, by name.
#[derive(Debug, Default)]
pub struct PhaseTimes;

impl<S> Layer<S> for PhaseTimes
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut extensions = span.extensions_mut();
        if attrs.metadata().name() == REQUEST {
            extensions.insert(Phases::default());
        } else {
            extensions.insert(Began(Instant::now()));
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let Some(took) = span.extensions().get::<Began>().map(|b| b.0.elapsed()) else {
            return;
        };
        let name = span.metadata().name();
        let Some(request) = span
            .scope()
            .skip(1)
            .find(|s| s.metadata().name() == REQUEST)
        else {
            return;
        };
        let extensions = request.extensions();
        let Some(phases) = extensions.get::<Phases>() else {
            return;
        };
        let Ok(mut phases) = phases.0.lock() else {
            return;
        };
        match phases.iter_mut().find(|(n, _)| *n == name) {
            Some((_, total)) => *total += took,
            None => phases.push((name, took)),
        }
    }
}

/// The phase times recorded in `span` so far, as `name=ms` pairs (`auth=0 walk=12`).
pub fn phases_of(span: &Span) -> String {
    span.with_subscriber(|(id, dispatch)| {
        let registry = dispatch.downcast_ref::<tracing_subscriber::Registry>()?;
        let data = registry.span(id)?;
        let extensions = data.extensions();
        let phases = extensions.get::<Phases>()?.0.lock().ok()?;
        let mut out = String::new();
        for (name, took) in phases.iter() {
            if !out.is_empty() {
                out.push(' ');
            }
            let _ = write!(out, "{name}={}", took.as_millis());
        }
        Some(out)
    })
    .flatten()
    .unwrap_or_default()
}

/// How log lines are written (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines; colours only when standard error is a terminal.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Installs the process's subscriber: logs on standard error in `format`, filtered by
/// `RUST_LOG` (default `stowage=info`), with request phase times; in a build with the
/// `otlp` feature, spans are exported by OTLP too when `OTEL_EXPORTER_OTLP_ENDPOINT`
/// (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set.
pub fn init(format: LogFormat) {
    use std::io::IsTerminal;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "stowage=info".into());
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs = match format {
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).boxed(),
        LogFormat::Json => logs.json().with_ansi(false).boxed(),
    };
    let registry = tracing_subscriber::registry()
        .with(filter)
        .with(logs)
        .with(PhaseTimes);
    #[cfg(feature = "otlp")]
    let registry = registry.with(otlp::layer());
    registry.init();
}

/// Sends what is left to export before the process exits.
pub fn shutdown() {
    #[cfg(feature = "otlp")]
    otlp::shutdown();
}

#[cfg(feature = "otlp")]
mod otlp {
    use std::sync::OnceLock;

    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use tracing::Subscriber;
    use tracing_subscriber::registry::LookupSpan;

    static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

    /// The OTLP layer, when an endpoint is configured.
    pub(super) fn layer<S>()
    -> Option<tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::Tracer>>
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        let configured = [
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        ]
        .iter()
        .any(|v| std::env::var_os(v).is_some());
        if !configured {
            return None;
        }
        let exporter = match opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .build()
        {
            Ok(exporter) => exporter,
            Err(e) => {
                eprintln!("stowage: OTLP export is off: {e}");
                return None;
            }
        };
        let resource = opentelemetry_sdk::Resource::builder()
            .with_service_name("stowage")
            .build();
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("stowage");
        let _ = PROVIDER.set(provider);
        Some(tracing_opentelemetry::layer().with_tracer(tracer))
    }

    pub(super) fn shutdown() {
        if let Some(provider) = PROVIDER.get() {
            let _ = provider.shutdown();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn phases_add_up_into_their_request() {
        let subscriber = tracing_subscriber::registry().with(PhaseTimes);
        tracing::subscriber::with_default(subscriber, || {
            let request = tracing::info_span!("request");
            request.in_scope(|| {
                for _ in 0..2 {
                    let _walk = tracing::info_span!("walk").entered();
                    std::thread::sleep(Duration::from_millis(5));
                }
                let store = tracing::info_span!("store");
                store.in_scope(|| {
                    // A span inside a phase counts under its own name too.
                    let _inner = tracing::info_span!("put").entered();
                });
            });
            let text = phases_of(&request);
            let walk: u64 = text
                .split(' ')
                .find_map(|p| p.strip_prefix("walk="))
                .and_then(|ms| ms.parse().ok())
                .expect("walk timed");
            assert!(walk >= 10, "{text}");
            assert!(text.contains("store="), "{text}");
            assert!(text.contains("put="), "{text}");
        });
    }
}
