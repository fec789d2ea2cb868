//! The metrics listener (`[metrics] listen`): `GET /metrics` in the Prometheus text format and
//! `GET /healthz`. A client of the components, like the other channels: at each scrape it asks
//! the kernel handle for the kernel's counters, the policy store for the snapshot in force, the
//! webhook notifier for its totals, and bpffs (on a blocking thread, I10) for the programs'
//! pinned links; everything else was recorded by the components into [`Metrics`] as it
//! happened. It answers nothing that decides or reveals a hold's content.
use std::{path::PathBuf, sync::Arc};

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use tokio::net::TcpListener;

use super::{kernel::KernelHandle, policy_store::PolicyStore};
use crate::{approval::webhook::WebhookHandle, metrics::Metrics};

/// The content type of what `prometheus-client` writes: the `OpenMetrics` text format, which
/// Prometheus reads (and prefers) since 2.5.
const TEXT_FORMAT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What the listener reads from.
pub struct Sources {
    pub metrics: Metrics,
    pub kernel: KernelHandle,
    pub policy: PolicyStore,
    pub webhook: Option<WebhookHandle>,
    pub bpffs: PathBuf,
}

/// Programs this kernel should have, each with whether its link is pinned. Reads BTF and
/// bpffs: call it on a blocking thread.
fn programs(bpffs: &std::path::Path) -> Vec<(&'static str, &'static str, bool)> {
    let expected = crate::bpf::programs_for_this_kernel()
        .unwrap_or_else(|_| jit_common::program_names::ALL.to_vec());
    let links = bpffs.join("links");
    expected
        .into_iter()
        .map(|(name, hook)| (name, hook, links.join(name).exists()))
        .collect()
}

/// Brings the values read at scrape time up to date. `Err` names what could not be read.
async fn refresh(sources: &Sources) -> Result<(), String> {
    sources
        .metrics
        .policy_generation(sources.policy.current().generation);
    if let Some(webhook) = &sources.webhook {
        sources.metrics.webhook(webhook.stats());
    }
    let bpffs = sources.bpffs.clone();
    let programs = tokio::task::spawn_blocking(move || programs(&bpffs))
        .await
        .map_err(|e| format!("reading bpffs: {e}"))?;
    sources.metrics.programs(&programs);
    let counters = match sources.kernel.call(crate::bpf::Enforcer::counters).await {
        Ok(Ok(counters)) => counters,
        Ok(Err(err)) => return Err(format!("reading the kernel counters: {err}")),
        Err(_) => return Err("the kernel handle has stopped".to_owned()),
    };
    sources.metrics.kernel_counters(&counters);
    let detached: Vec<&str> = programs
        .iter()
        .filter(|(_, _, attached)| !attached)
        .map(|(name, _, _)| *name)
        .collect();
    if detached.is_empty() {
        Ok(())
    } else {
        Err(format!("programs not attached: {}", detached.join(", ")))
    }
}

async fn metrics(State(sources): State<Arc<Sources>>) -> impl IntoResponse {
    // A partial refresh still serves what is known; /healthz says what is wrong.
    if let Err(why) = refresh(&sources).await {
        tracing::debug!(why, "metrics scraped with stale values");
    }
    (
        [(header::CONTENT_TYPE, TEXT_FORMAT)],
        sources.metrics.encode(),
    )
}

/// 200 `ok` while the kernel handle answers and every program is attached, else 503 and why.
async fn healthz(State(sources): State<Arc<Sources>>) -> impl IntoResponse {
    match refresh(&sources).await {
        Ok(()) => (StatusCode::OK, "ok\n".to_owned()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
    }
}

/// The listener's routes.
pub fn router(sources: Sources) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .with_state(Arc::new(sources))
}

/// Binds the listener when `[metrics] listen` is set.
///
/// # Errors
/// When the address cannot be bound.
pub async fn bind(
    config: &crate::config::Config,
) -> Result<Option<TcpListener>, super::DaemonError> {
    let Some(listen) = config.metrics.listen else {
        return Ok(None);
    };
    TcpListener::bind(listen)
        .await
        .map(Some)
        .map_err(|source| super::DaemonError::Metrics {
            listen: listen.to_string(),
            source,
        })
}

/// Serves the routes on `listener` for as long as the daemon runs.
pub async fn serve(listener: TcpListener, sources: Sources) {
    tracing::info!(
        listen = ?listener.local_addr().ok(),
        "metrics listener ready (/metrics, /healthz)"
    );
    if let Err(err) = axum::serve(listener, router(sources)).await {
        tracing::error!(error = %err, "the metrics listener stopped");
    }
}
