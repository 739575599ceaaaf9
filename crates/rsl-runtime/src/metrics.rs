//! A minimal HTTP responder for Prometheus scrapes, so a process embedding rsl can expose
//! its statistics without an HTTP framework.
//!
//! It answers `GET /metrics` (and `GET /`) with [`Runtime::render_prometheus`] and anything
//! else with 404, one request per connection (`Connection: close`). Requests are read up to
//! [`REQUEST_BYTES_MAX`] and each connection gets [`CONNECTION_TIMEOUT`]. A service that
//! already has an HTTP server should call `render_prometheus` from its own handler instead.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::runtime::Runtime;

/// Bytes of request head read at most.
pub const REQUEST_BYTES_MAX: usize = 8192;
/// Time one connection may take, from accept to the last byte written.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves scrapes on `listener` until accepting fails. Spawn it as a task; abort the task to
/// stop serving.
pub async fn serve_metrics(runtime: Runtime, listener: TcpListener) -> std::io::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        let runtime = runtime.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(CONNECTION_TIMEOUT, respond(&runtime, stream)).await;
        });
    }
}

async fn respond(runtime: &Runtime, mut stream: TcpStream) -> std::io::Result<()> {
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
    let (status, body) = if method == b"GET" && (path == b"/metrics" || path == b"/") {
        ("200 OK", runtime.render_prometheus().await)
    } else {
        ("404 Not Found", "not found; scrape /metrics\n".to_string())
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}
