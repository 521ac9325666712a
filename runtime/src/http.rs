//! The operations endpoint: one HTTP/1 listener (hyper) on its own task,
//! serving `/metrics` (the Prometheus registry), `/healthz` (the process is
//! alive) and `/readyz` (every watch established and every exporter able to
//! deliver). Requests only read shared state, so scraping never waits on the
//! pipeline.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::health::Readiness;
use crate::metrics::Metrics;

/// The content type of the text prometheus-client encodes.
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";

#[derive(Debug, thiserror::Error)]
#[error("[http] address {address}: cannot listen: {source}")]
pub struct BindError {
    pub address: SocketAddr,
    #[source]
    pub source: std::io::Error,
}

/// What the handlers read.
#[derive(Clone)]
pub struct State {
    pub metrics: Arc<Metrics>,
    pub readiness: Arc<Readiness>,
}

/// Binds the listener (before anything else starts, so a taken port fails early).
pub async fn bind(address: SocketAddr) -> Result<TcpListener, BindError> {
    TcpListener::bind(address)
        .await
        .map_err(|source| BindError { address, source })
}

/// Serves connections until `shutdown`; each connection runs on its own task.
pub async fn serve(listener: TcpListener, state: State, shutdown: CancellationToken) {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(address = %addr, "serving /metrics, /healthz and /readyz");
    }
    loop {
        let (stream, _) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little rather than spin.
                    tracing::warn!(error = %e, "http: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let state = state.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(&state, &req)) }
            });
            let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => if let Err(e) = r {
                    tracing::debug!(error = %e, "http: connection ended with an error");
                },
                _ = shutdown.cancelled() => conn.as_mut().graceful_shutdown(),
            }
        });
    }
}

fn response(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// Answers one request.
pub fn handle(state: &State, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    route(state, req.method(), req.uri().path())
}

fn route(state: &State, method: &Method, path: &str) -> Response<Full<Bytes>> {
    if !matches!(path, "/metrics" | "/healthz" | "/readyz") {
        return response(
            StatusCode::NOT_FOUND,
            TEXT,
            "not found: try /metrics, /healthz or /readyz\n",
        );
    }
    if method != Method::GET && method != Method::HEAD {
        let mut r = response(StatusCode::METHOD_NOT_ALLOWED, TEXT, "only GET\n");
        r.headers_mut().insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let mut r = match path {
        "/metrics" => response(StatusCode::OK, METRICS_CONTENT_TYPE, state.metrics.encode()),
        "/healthz" => response(StatusCode::OK, TEXT, "ok\n"),
        _ => {
            let rep = state.readiness.report();
            let status = if rep.ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            response(status, TEXT, format!("{}\n", rep.detail))
        }
    };
    if method == Method::HEAD {
        *r.body_mut() = Full::new(Bytes::new());
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use prometheus_client::metrics::gauge::Gauge;

    fn state() -> State {
        let metrics = Arc::new(Metrics::new());
        let readiness = Arc::new(Readiness::new(
            vec!["core/v1 in all namespaces".into()],
            vec!["es".into()],
            Gauge::default(),
        ));
        State { metrics, readiness }
    }

    async fn body(r: Response<Full<Bytes>>) -> String {
        let bytes = r.into_body().collect().await.map(|c| c.to_bytes()).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    #[tokio::test]
    async fn paths_and_methods() {
        let s = state();
        let r = route(&s, &Method::GET, "/healthz");
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(body(r).await, "ok\n");

        let r = route(&s, &Method::GET, "/readyz");
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            body(r).await,
            "watch core/v1 in all namespaces: not established; exporter es: NotReady: not started\n"
        );
        s.readiness.watch_listed(0);
        s.readiness
            .exporter_health(0, &event_collector_exporters::Health::Ready);
        let r = route(&s, &Method::GET, "/readyz");
        assert_eq!(r.status(), StatusCode::OK);

        let r = route(&s, &Method::GET, "/metrics");
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[CONTENT_TYPE], METRICS_CONTENT_TYPE);
        let text = body(r).await;
        assert!(text.contains("# TYPE event_collector_ready gauge"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");

        assert_eq!(route(&s, &Method::GET, "/").status(), StatusCode::NOT_FOUND);
        assert_eq!(
            route(&s, &Method::POST, "/metrics").status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
        let r = route(&s, &Method::HEAD, "/healthz");
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(body(r).await, "");
    }
}
