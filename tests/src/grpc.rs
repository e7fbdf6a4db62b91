//! A minimal gRPC echo server (h2c only, prior knowledge) and client for the e2e tests.
//!
//! gRPC framing is a 5-byte prefix (compressed flag, big-endian length) and an opaque message:
//! no protobuf is needed to prove routing, streaming and trailers. Methods of the server
//! (`/<any service>/<method>`):
//!
//! - `Say` (unary): one message back, a JSON document `{"backend", "path", "headers",
//!   "message"}` describing the call; trailers `grpc-status: 0` and `x-echo-trailer: <backend>`.
//! - `Collect` (client streaming): after the request ends, one message: the request messages
//!   joined by `,`.
//! - `Count` (server streaming): the request message is a number N; N messages `1`..`N`.
//! - `Chat` (bidirectional): every message echoed as it arrives.
//! - `Fail`: trailers-only, `grpc-status: 5`, `grpc-message: not found here`.
//! - `Slow`: answers `Say`'s way, its response head 5 s late.
//!
//! Any other method: trailers-only `grpc-status: 12`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Request, Response};
use hyper::body::{Body, Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Upper bound of every wait in the client.
const WAIT: Duration = Duration::from_secs(10);

/// One gRPC message with its 5-byte prefix.
pub fn frame_message(message: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(5 + message.len());
    out.put_u8(0);
    out.put_u32(u32::try_from(message.len()).expect("message length"));
    out.put_slice(message);
    out.freeze()
}

/// Splits complete messages off the front of `buf`.
fn take_messages(buf: &mut BytesMut) -> Vec<Bytes> {
    let mut out = Vec::new();
    while buf.len() >= 5 {
        let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
        if buf.len() < 5 + len {
            break;
        }
        buf.advance(5);
        out.push(buf.split_to(len).freeze());
    }
    out
}

/// A body fed frame by frame from a channel: nothing is sent before it is pushed.
#[derive(Debug)]
pub struct ChannelBody(mpsc::Receiver<Frame<Bytes>>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|f| f.map(Ok))
    }
}

fn channel() -> (mpsc::Sender<Frame<Bytes>>, ChannelBody) {
    let (tx, rx) = mpsc::channel(16);
    (tx, ChannelBody(rx))
}

fn trailers(status: u8, message: Option<&str>, extra: &[(&'static str, &str)]) -> HeaderMap {
    let mut t = HeaderMap::new();
    t.insert("grpc-status", HeaderValue::from(u16::from(status)));
    if let Some(m) = message {
        t.insert("grpc-message", HeaderValue::from_str(m).expect("message"));
    }
    for (name, value) in extra {
        t.insert(*name, HeaderValue::from_str(value).expect("value"));
    }
    t
}

/// The h2c gRPC echo server on 127.0.0.1.
#[derive(Debug)]
pub struct GrpcEcho {
    pub name: String,
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl GrpcEcho {
    /// Starts a server on an ephemeral loopback port.
    pub async fn start(name: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind grpc echo");
        let addr = listener.local_addr().expect("local addr");
        let backend = name.to_owned();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let backend = backend.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let backend = backend.clone();
                        async move {
                            if req.uri().path().ends_with("/Slow") {
                                tokio::time::sleep(Duration::from_secs(5)).await;
                            }
                            Ok::<_, Infallible>(serve(backend, req))
                        }
                    });
                    // HTTP/2 only: an HTTP/1.1 request from the proxy fails the connection.
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { name: name.to_owned(), addr, task }
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

impl Drop for GrpcEcho {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn serve(backend: String, req: Request<Incoming>) -> Response<ChannelBody> {
    let (tx, body) = channel();
    let path = req.uri().path().to_owned();
    let method = path.rsplit('/').next().unwrap_or_default().to_owned();
    let mut headers = serde_json::Map::new();
    for name in req.headers().keys() {
        let values: Vec<&str> =
            req.headers().get_all(name).iter().filter_map(|v| v.to_str().ok()).collect();
        headers.insert(name.as_str().to_owned(), values.join(", ").into());
    }
    let mut resp = Response::new(body);
    resp.headers_mut().insert("content-type", HeaderValue::from_static("application/grpc"));
    resp.headers_mut()
        .insert("x-echo-backend", HeaderValue::from_str(&backend).expect("backend name"));
    if !matches!(method.as_str(), "Say" | "Collect" | "Count" | "Chat" | "Fail" | "Slow") {
        resp.headers_mut().insert("grpc-status", HeaderValue::from_static("12"));
        drop(tx);
        return resp;
    }
    if method == "Fail" {
        resp.headers_mut().insert("grpc-status", HeaderValue::from_static("5"));
        resp.headers_mut().insert("grpc-message", HeaderValue::from_static("not found here"));
        drop(tx);
        return resp;
    }
    let mut incoming = req.into_body();
    tokio::spawn(async move {
        let mut buf = BytesMut::new();
        let mut received: Vec<Bytes> = Vec::new();
        while let Some(Ok(frame)) =
            std::future::poll_fn(|cx| Pin::new(&mut incoming).poll_frame(cx)).await
        {
            let Ok(data) = frame.into_data() else { continue };
            buf.extend_from_slice(&data);
            for m in take_messages(&mut buf) {
                if method == "Chat" {
                    let _ = tx.send(Frame::data(frame_message(&m))).await;
                }
                received.push(m);
            }
        }
        let reply = |m: &[u8]| Frame::data(frame_message(m));
        match method.as_str() {
            "Say" | "Slow" => {
                let doc = serde_json::json!({
                    "backend": backend,
                    "path": path,
                    "headers": headers,
                    "message": received
                        .first()
                        .map(|m| String::from_utf8_lossy(m).into_owned())
                        .unwrap_or_default(),
                });
                let _ = tx.send(reply(doc.to_string().as_bytes())).await;
            }
            "Collect" => {
                let joined: Vec<String> =
                    received.iter().map(|m| String::from_utf8_lossy(m).into_owned()).collect();
                let _ = tx.send(reply(joined.join(",").as_bytes())).await;
            }
            "Count" => {
                let n: u32 = received
                    .first()
                    .and_then(|m| std::str::from_utf8(m).ok())
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                for i in 1..=n.min(1000) {
                    let _ = tx.send(reply(i.to_string().as_bytes())).await;
                }
            }
            _ => {}
        }
        let _ = tx.send(Frame::trailers(trailers(0, None, &[("x-echo-trailer", &backend)]))).await;
    });
    resp
}

/// The end of a call: response head, messages and the final status (from trailers, or from
/// the head of a trailers-only response).
#[derive(Debug)]
pub struct GrpcReply {
    pub http_status: u16,
    pub headers: HeaderMap,
    pub messages: Vec<Bytes>,
    pub trailers: HeaderMap,
}

impl GrpcReply {
    /// `grpc-status`, from the trailers or (trailers-only) the head.
    pub fn grpc_status(&self) -> Option<u32> {
        self.trailers
            .get("grpc-status")
            .or_else(|| self.headers.get("grpc-status"))
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
    }

    /// `grpc-message`, from the trailers or the head.
    pub fn grpc_message(&self) -> Option<&str> {
        self.trailers
            .get("grpc-message")
            .or_else(|| self.headers.get("grpc-message"))
            .and_then(|v| v.to_str().ok())
    }

    /// The first message as JSON (`Say`'s description of the call).
    pub fn json(&self) -> serde_json::Value {
        let first = self.messages.first().expect("a message");
        serde_json::from_slice(first).expect("JSON message")
    }

    /// A head header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A call in progress: send messages, read messages, then the end.
#[derive(Debug)]
pub struct GrpcCall {
    tx: Option<mpsc::Sender<Frame<Bytes>>>,
    pub http_status: u16,
    pub headers: HeaderMap,
    body: Incoming,
    buf: BytesMut,
    pending: std::collections::VecDeque<Bytes>,
    trailers: HeaderMap,
}

impl GrpcCall {
    /// Sends one message; `false` when the request stream is already gone (the server ended
    /// the call).
    pub async fn send(&mut self, message: &[u8]) -> bool {
        match &self.tx {
            Some(tx) => tx.send(Frame::data(frame_message(message))).await.is_ok(),
            None => false,
        }
    }

    /// Ends the request stream.
    pub fn close(&mut self) {
        self.tx = None;
    }

    /// The next message, or `None` at the end of the response; panics after [`WAIT`].
    pub async fn recv(&mut self) -> Option<Bytes> {
        loop {
            if let Some(m) = self.pending.pop_front() {
                return Some(m);
            }
            let frame = tokio::time::timeout(
                WAIT,
                std::future::poll_fn(|cx| Pin::new(&mut self.body).poll_frame(cx)),
            )
            .await
            .expect("a response frame in time");
            match frame {
                None => return None,
                Some(Err(e)) => panic!("response body failed: {e}"),
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        self.buf.extend_from_slice(&data);
                        self.pending.extend(take_messages(&mut self.buf));
                    }
                    Err(frame) => {
                        if let Ok(t) = frame.into_trailers() {
                            self.trailers = t;
                        }
                    }
                },
            }
        }
    }

    /// Reads to the end and returns everything that came.
    pub async fn finish(mut self) -> GrpcReply {
        self.close();
        let mut messages = Vec::new();
        while let Some(m) = self.recv().await {
            messages.push(m);
        }
        GrpcReply {
            http_status: self.http_status,
            headers: self.headers,
            messages,
            trailers: self.trailers,
        }
    }
}

/// A gRPC client over one h2c (prior knowledge) connection.
#[derive(Debug)]
pub struct GrpcClient {
    sender: hyper::client::conn::http2::SendRequest<ChannelBody>,
}

impl GrpcClient {
    /// Connects to `addr` with HTTP/2 prior knowledge.
    pub async fn connect(addr: SocketAddr) -> Self {
        let stream = tokio::time::timeout(WAIT, TcpStream::connect(addr))
            .await
            .expect("connect in time")
            .expect("connect");
        let (sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .expect("h2 handshake");
        tokio::spawn(conn);
        Self { sender }
    }

    /// Starts a call to `path` (`/<service>/<method>`) for `host`, with extra request headers;
    /// returns once the response head arrived.
    pub async fn start(&mut self, host: &str, path: &str, headers: &[(&str, &str)]) -> GrpcCall {
        self.open(host, path, headers, None).await
    }

    /// Sends the request head (and, for a unary call, its one message and the end of the
    /// request) and waits for the response head.
    async fn open(
        &mut self,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
        unary: Option<&[u8]>,
    ) -> GrpcCall {
        let (tx, body) = channel();
        let tx = match unary {
            Some(message) => {
                tx.send(Frame::data(frame_message(message))).await.expect("queue message");
                // The request ends now, before the response head is awaited.
                drop(tx);
                None
            }
            None => Some(tx),
        };
        let mut req = Request::new(body);
        *req.method_mut() = http::Method::POST;
        *req.uri_mut() = format!("http://{host}{path}").parse().expect("uri");
        let h = req.headers_mut();
        h.insert("content-type", HeaderValue::from_static("application/grpc"));
        h.insert("te", HeaderValue::from_static("trailers"));
        for (name, value) in headers {
            h.insert(
                http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
                HeaderValue::from_str(value).expect("value"),
            );
        }
        self.sender.ready().await.expect("connection ready");
        let resp = tokio::time::timeout(WAIT, self.sender.send_request(req))
            .await
            .expect("response head in time")
            .expect("response head");
        let (parts, body) = resp.into_parts();
        GrpcCall {
            tx,
            http_status: parts.status.as_u16(),
            headers: parts.headers,
            body,
            buf: BytesMut::new(),
            pending: Default::default(),
            trailers: HeaderMap::new(),
        }
    }

    /// A unary call: one message, then everything that came back.
    pub async fn unary(
        &mut self,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
        message: &[u8],
    ) -> GrpcReply {
        self.open(host, path, headers, Some(message)).await.finish().await
    }
}
