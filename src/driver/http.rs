//! The HTTP listener: `GET /health`, `GET /metrics` (Prometheus), `GET /api/sessions`.
//! Deliberately tiny (HTTP/1.1, one request per connection): it serves operators and scrapers,
//! not the public.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::metrics::{self, Snapshot};

/// What the control loop publishes for the HTTP API.
#[derive(Default)]
pub struct Published {
    pub snapshot: Snapshot,
    pub sessions: Vec<serde_json::Value>,
    pub backend: String,
}

pub async fn serve(listener: TcpListener, state: Rc<RefCell<Published>>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let state = state.clone();
        tokio::task::spawn_local(async move {
            let _ = tokio::time::timeout(Duration::from_secs(10), handle(stream, state)).await;
        });
    }
}

async fn handle(mut stream: TcpStream, state: Rc<RefCell<Published>>) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).await?;
        if n == 0 || buf.len() > 8192 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let line = String::from_utf8_lossy(&buf);
    let mut words = line.split_whitespace();
    let method = words.next().unwrap_or("");
    let path = words.next().unwrap_or("");
    let (status, ctype, body) = route(method, path, &state.borrow());
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
