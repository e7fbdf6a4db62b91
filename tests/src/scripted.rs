use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

/// One request a [`ScriptedBackend`] received.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    /// Path and query.
    pub path: String,
    pub headers: http::HeaderMap,
    pub body: Bytes,
    /// When the request (head and body) had been read.
    pub at: std::time::Instant,
}

/// What a [`ScriptedBackend`] does with its n-th request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Answer with this status (body `backend <name>`).
    Status(u16),
    /// Close the connection without answering.
    Hangup,
    /// Wait this long, then answer 200.
    Delay(Duration),
}

/// An HTTP/1.1 + h2c server on 127.0.0.1 that records every request and answers the n-th one
/// as `script[n]` says, then 200 once the script is used up. For retry, mirror and timeout
/// tests, where what the backend saw is the assertion.
#[derive(Debug)]
pub struct ScriptedBackend {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: JoinHandle<()>,
}

impl ScriptedBackend {
    /// Starts a backend on an ephemeral loopback port.
    pub async fn start(name: &str, script: Vec<Step>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind scripted backend");
        let addr = listener.local_addr().expect("local addr");
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let state = (Arc::new(script), seen.clone(), Arc::<str>::from(name));
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let (script, seen, name) = state.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let (script, seen, name) = (script.clone(), seen.clone(), name.clone());
                        async move { answer(&script, &seen, &name, req).await }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, seen, task }
    }

    /// The backend's port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Every request received so far, in arrival order.
    pub async fn requests(&self) -> Vec<Seen> {
        self.seen.lock().await.clone()
    }

    /// Waits until at least `n` requests arrived (at most `within`), then returns them all.
    pub async fn wait_requests(&self, n: usize, within: Duration) -> Vec<Seen> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let seen = self.requests().await;
            if seen.len() >= n || tokio::time::Instant::now() >= deadline {
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for ScriptedBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(
    script: &[Step],
    seen: &Mutex<Vec<Seen>>,
    name: &str,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, std::io::Error> {
    let (parts, body) = req.into_parts();
    #[allow(clippy::disallowed_methods, reason = "bounded by Limited")]
    let body = http_body_util::Limited::new(body, 16 << 20)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let n = {
        let mut seen = seen.lock().await;
        seen.push(Seen {
            method: parts.method.to_string(),
            path: parts.uri.path_and_query().map(|p| p.to_string()).unwrap_or_default(),
            headers: parts.headers,
            body,
            at: std::time::Instant::now(),
        });
        seen.len() - 1
    };
    let status = match script.get(n).copied().unwrap_or(Step::Status(200)) {
        Step::Status(s) => s,
        Step::Hangup => return Err(std::io::Error::other("scripted hangup")),
        Step::Delay(d) => {
            tokio::time::sleep(d).await;
            200
        }
    };
    let mut resp = Response::new(Full::new(Bytes::from(format!("backend {name}\n"))));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    resp.headers_mut().insert(
        "x-echo-backend",
        http::HeaderValue::from_str(name).unwrap_or(http::HeaderValue::from_static("?")),
    );
    Ok(resp)
}
