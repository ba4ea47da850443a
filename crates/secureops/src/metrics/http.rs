//! The `/metrics` listener: hyper's HTTP/1 server on its own socket, a few
//! connections at a time, each with a header timeout. Anything but
//! `GET /metrics` (or `HEAD`) is a 404 or 405; nothing else is served.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::encoding::prometheus_text::CONTENT_TYPE as PROMETHEUS_TEXT;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::{Sources, registry, render};

/// Scrapes served at once; more wait in the kernel's accept queue.
const MAX_CONNECTIONS: usize = 16;
/// A scraper that has not sent its request head by then is cut off.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// A running `/metrics` listener.
#[derive(Debug)]
pub(crate) struct Server {
    /// Where it listens.
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Binds `listen` and serves `sources` until `shutdown` is cancelled.
    pub(crate) async fn start(
        listen: SocketAddr,
        sources: Sources,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on [metrics] listen = {listen}"))?;
        let addr = listener.local_addr()?;
        let registry = Arc::new(registry(sources));
        let task = tokio::spawn(serve(listener, registry, shutdown));
        Ok(Self { addr, task })
    }

    /// Waits for the listener to stop (after its shutdown token is cancelled).
    pub(crate) async fn stopped(self) {
        let _ = self.task.await;
    }
}

async fn serve(listener: TcpListener, registry: Arc<Registry>, shutdown: CancellationToken) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            () = shutdown.cancelled() => return,
            permit = Arc::clone(&slots).acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let stream = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let registry = Arc::clone(&registry);
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let registry = Arc::clone(&registry);
                async move { Ok::<_, Infallible>(respond(&req, &registry)) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                served = conn => if let Err(e) = served {
                    tracing::debug!(error = %e, "metrics connection ended");
                },
                () = shutdown.cancelled() => {}
            }
            drop(permit);
        });
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    resp
}

fn respond(req: &Request<Incoming>, registry: &Registry) -> Response<Full<Bytes>> {
    if req.uri().path() != "/metrics" {
        return text(StatusCode::NOT_FOUND, "not found: the metrics are at /metrics\n");
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut resp = text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
        resp.headers_mut().insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return resp;
    }
    match render(registry) {
        Ok(body) => {
            let mut resp = text(StatusCode::OK, body);
            resp.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(PROMETHEUS_TEXT));
            resp
        }
        Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "cannot encode the metrics\n"),
    }
}
