//! A minimal HTTP responder for Prometheus scrapes and health probes, so a process
//! embedding rsl can expose its statistics without an HTTP framework.
//!
//! It answers `GET /metrics` (and `GET /`) with [`Runtime::render_prometheus`], and the
//! probes of supervisors and load balancers: `GET /healthz` with 200 while every ring of
//! the runtime runs (503 naming a ring that stopped), `GET /readyz` with 200 while every
//! ring is ready ([`Ring::readiness`](crate::Ring::readiness): a member, caught up within
//! [`ReadinessOptions::lag_slots_max`], following a live primary) and 503 with a one-line
//! reason otherwise. Anything else is 404. One request per connection
//! (`Connection: close`); requests are read up to [`REQUEST_BYTES_MAX`] and each
//! connection gets [`CONNECTION_TIMEOUT`]. A service that already has an HTTP server calls
//! `render_prometheus` and `Ring::readiness` from its own handlers instead.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::health::ReadinessOptions;
use crate::runtime::Runtime;

/// Bytes of request head read at most.
pub const REQUEST_BYTES_MAX: usize = 8192;
/// Time one connection may take, from accept to the last byte written.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves scrapes and probes on `listener` with the default [`ReadinessOptions`] until
/// accepting fails. Spawn it as a task; abort the task to stop serving.
pub async fn serve_metrics(runtime: Runtime, listener: TcpListener) -> std::io::Result<()> {
    serve_metrics_with(runtime, listener, ReadinessOptions::default()).await
}

/// [`serve_metrics`] with the readiness bound `options` for `/readyz`.
pub async fn serve_metrics_with(
    runtime: Runtime,
    listener: TcpListener,
    options: ReadinessOptions,
) -> std::io::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        let runtime = runtime.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(CONNECTION_TIMEOUT, respond(&runtime, stream, options)).await;
        });
    }
}

/// `/healthz`: the runtime serves while none of its rings stopped.
async fn healthz(runtime: &Runtime) -> Result<String, String> {
    for id in runtime.rings() {
        if let Some(reason) = runtime.ring(id).and_then(|ring| ring.stop_reason()) {
            return Err(format!("ring {} stopped: {reason}", id.0));
        }
    }
    Ok("ok".into())
}

/// `/readyz`: every ring of the runtime is ready.
async fn readyz(runtime: &Runtime, options: ReadinessOptions) -> Result<String, String> {
    let ids = runtime.rings();
    if ids.is_empty() {
        return Err("no ring is running".into());
    }
    for id in ids {
        let Some(ring) = runtime.ring(id) else { return Err(format!("ring {} stopped", id.0)) };
        ring.readiness(options).await.map_err(|reason| format!("ring {}: {reason}", id.0))?;
    }
    Ok("ready".into())
}

async fn respond(runtime: &Runtime, mut stream: TcpStream, options: ReadinessOptions) -> std::io::Result<()> {
    let mut head = vec![0u8; REQUEST_BYTES_MAX];
    let mut read = 0;
    while read < head.len() {
        let n = stream.read(&mut head[read..]).await?;
        if n == 0 {
            break;
        }
        read += n;
        if head[..read].windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    let request_line = head[..read].split(|&b| b == b'\r' || b == b'\n').next().unwrap_or_default();
    let mut parts = request_line.split(|&b| b == b' ');
    let (method, path) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    let probe = |answer: Result<String, String>| match answer {
        Ok(text) => ("200 OK", format!("{text}\n")),
        Err(reason) => ("503 Service Unavailable", format!("{reason}\n")),
    };
    let (status, body) = match (method, path) {
        (b"GET", b"/metrics" | b"/") => ("200 OK", runtime.render_prometheus().await),
        (b"GET", b"/healthz") => probe(healthz(runtime).await),
        (b"GET", b"/readyz") => probe(readyz(runtime, options).await),
        _ => ("404 Not Found", "not found; scrape /metrics, probe /healthz or /readyz\n".to_string()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}
