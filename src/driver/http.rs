//! The HTTP listener: `GET /health`, `GET /metrics` (Prometheus), `GET /api/sessions`.
//! Deliberately tiny (HTTP/1.1, one request per connection): it serves operators and scrapers,
//! not the public.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

use crate::metrics::{self, Snapshot};

/// What the control loop answers a [`Query`] with.
#[derive(Default)]
pub struct Published {
    pub snapshot: Snapshot,
    /// Filled only when the query asked for it (building it is O(sessions)).
    pub sessions: Vec<serde_json::Value>,
    pub backend: String,
}

/// A request for fresh data, answered by the control loop. The data is built per request,
/// not on a timer: an idle recorder with thousands of sessions then spends nothing on an API
/// nobody reads (a 10/s rebuild of the sessions list cost ~0.1 CPU-s/s at 1,000 sessions).
pub struct Query {
    pub sessions: bool,
    pub reply: oneshot::Sender<Published>,
}

/// Most API connections served at once. Scrapers and operators need a handful; a flood of
/// connections beyond this is closed on accept, so it cannot take the file descriptors that
/// SIP connections and RTP sockets need.
pub const MAX_CONNECTIONS: usize = 64;
/// A client must send its whole request within this of connecting (scrapers and health checks
/// send it at once): idle connections then cannot hold the [`MAX_CONNECTIONS`] slots, and with
/// them `/health`, for more than a moment.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(2);

pub async fn serve(listener: TcpListener, queries: mpsc::UnboundedSender<Query>) {
    let open = std::rc::Rc::new(std::cell::Cell::new(0usize));
    loop {
        let Ok((stream, remote)) = listener.accept().await else {
            // EMFILE and the like: retrying at once would spin the control thread.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        if open.get() >= MAX_CONNECTIONS {
            tracing::debug!(%remote, "too many HTTP API connections; closing one");
            continue;
        }
        open.set(open.get() + 1);
        let (queries, open) = (queries.clone(), open.clone());
        tokio::task::spawn_local(async move {
            let _ = tokio::time::timeout(Duration::from_secs(10), handle(stream, queries)).await;
            open.set(open.get().saturating_sub(1));
        });
    }
}

async fn handle(
    mut stream: TcpStream,
    queries: mpsc::UnboundedSender<Query>,
) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let read_request = async {
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut chunk).await?;
            if n == 0 || buf.len() > 8192 {
                return Ok(false);
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        Ok::<bool, std::io::Error>(true)
    };
    match tokio::time::timeout(REQUEST_DEADLINE, read_request).await {
        Ok(Ok(true)) => {}
        Ok(Ok(false)) | Err(_) => return Ok(()),
        Ok(Err(e)) => return Err(e),
    }
    let line = String::from_utf8_lossy(&buf);
    let mut words = line.split_whitespace();
    let method = words.next().unwrap_or("");
    let path = words.next().unwrap_or("");
    let (reply, answer) = oneshot::channel();
    let sessions = path.split('?').next() == Some("/api/sessions");
    if queries.send(Query { sessions, reply }).is_err() {
        return Ok(());
    }
    let Ok(published) = answer.await else {
        return Ok(());
    };
    let (status, ctype, body) = route(method, path, &published);
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

fn route(method: &str, path: &str, p: &Published) -> (&'static str, &'static str, String) {
    if method != "GET" {
        return ("405 Method Not Allowed", "text/plain", "GET only\n".into());
    }
    match path.split('?').next().unwrap_or("") {
        "/health" => {
            if p.snapshot.draining {
                ("503 Service Unavailable", "text/plain", "draining\n".into())
            } else {
                ("200 OK", "text/plain", "ok\n".into())
            }
        }
        "/metrics" => (
            "200 OK",
            "text/plain; version=0.0.4",
            metrics::render(&p.snapshot),
        ),
        "/api/sessions" => {
            let body = serde_json::json!({ "sessions": p.sessions }).to_string();
            ("200 OK", "application/json", body)
        }
        "/api/status" => {
            let s = &p.snapshot;
            let body = serde_json::json!({
                "sessions_active": s.sessions_active,
                "draining": s.draining,
                "disk_ok": s.disk_ok,
                "io_backend": p.backend,
            })
            .to_string();
            ("200 OK", "application/json", body)
        }
        _ => ("404 Not Found", "text/plain", "not found\n".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_says_503_while_draining() {
        let mut p = Published::default();
        assert_eq!(route("GET", "/health", &p).0, "200 OK");
        p.snapshot.draining = true;
        assert_eq!(route("GET", "/health", &p).0, "503 Service Unavailable");
    }

    #[test]
    fn unknown_path_is_404_and_post_is_405() {
        let p = Published::default();
        assert_eq!(route("GET", "/nope", &p).0, "404 Not Found");
        assert_eq!(route("POST", "/health", &p).0, "405 Method Not Allowed");
    }
}
