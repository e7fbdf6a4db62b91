//! TLS listeners: the ClientHello is read (bounded in size and time) and parsed by rustls's
//! `Acceptor`; its SNI picks the listener and route. Passthrough replays the bytes read, as
//! they came, to the backend; Terminate completes the handshake here.

use std::net::SocketAddr;
use std::sync::Arc;

use rustls::server::{Accepted, Acceptor};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::StartHandshake;

use crate::compile::{Bind, Frontend, Plan};
use crate::metrics::L4Metrics;

/// More than any real ClientHello (a TLS record is at most 16 KiB + header, and rustls takes
/// a hello in one handshake message); beyond it the client is dropped.
const MAX_HELLO: usize = 64 * 1024;

/// Why a connection was dropped before routing.
#[derive(Debug, thiserror::Error)]
pub enum HelloError {
    #[error("the client closed before finishing its ClientHello")]
    Closed,
    #[error("the ClientHello exceeds {MAX_HELLO} bytes")]
    TooLong,
    #[error("not a TLS ClientHello: {0}")]
    Invalid(rustls::Error),
    #[error("reading the ClientHello: {0}")]
    Io(#[from] std::io::Error),
}

/// A ClientHello arriving in pieces from an untrusted client: parsed by rustls's `Acceptor`,
/// every byte kept (for the passthrough replay), at most 64 KiB.
pub struct HelloReader {
    acceptor: Acceptor,
    bytes: Vec<u8>,
}

impl std::fmt::Debug for HelloReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HelloReader").field("bytes", &self.bytes.len()).finish_non_exhaustive()
    }
}

impl Default for HelloReader {
    fn default() -> Self {
        Self::new()
    }
}

impl HelloReader {
    /// Nothing read yet.
    pub fn new() -> Self {
        Self { acceptor: Acceptor::default(), bytes: Vec::new() }
    }

    /// Feeds the next bytes read; `Some` once the ClientHello is whole (bytes after it stay
    /// with rustls for the handshake, and in [`HelloReader::bytes`] for the replay).
    pub fn push(&mut self, chunk: &[u8]) -> Result<Option<Accepted>, HelloError> {
        if self.bytes.len() + chunk.len() > MAX_HELLO {
            return Err(HelloError::TooLong);
        }
        self.bytes.extend_from_slice(chunk);
        let mut fresh = chunk;
        while !fresh.is_empty() {
            if self.acceptor.read_tls(&mut fresh)? == 0 {
                return Err(HelloError::TooLong);
            }
        }
        match self.acceptor.accept() {
            Ok(accepted) => Ok(accepted),
            Err((e, _alert)) => Err(HelloError::Invalid(e)),
        }
    }

    /// Every byte fed so far, as it came.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// [`HelloReader::bytes`], by value.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

/// Reads until rustls has a whole ClientHello; returns it and every byte read.
pub(crate) async fn read_client_hello<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
) -> Result<(Accepted, Vec<u8>), HelloError> {
    let mut reader = HelloReader::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err(HelloError::Closed);
        }
        if let Some(accepted) = reader.push(&buf[..n])? {
            return Ok((accepted, reader.into_bytes()));
        }
    }
}

/// Serves one connection accepted on a TLS socket.
pub(crate) async fn serve(
    mut stream: TcpStream,
    peer: SocketAddr,
    bind: Bind,
    plan: Arc<Plan>,
    metrics: Arc<L4Metrics>,
) {
    let limits = plan.limits;
    let Some(Frontend::Tls(listeners)) = plan.frontends.get(&bind) else { return };
    let hello =
        tokio::time::timeout(limits.client_hello_timeout, read_client_hello(&mut stream)).await;
    let (accepted, bytes) = match hello {
        Ok(Ok(hello)) => hello,
        Ok(Err(e)) => {
            metrics.tls_rejected.inc();
            tracing::debug!(%peer, addr = %bind.addr, "TLS connection dropped: {e}");
            return;
        }
        Err(_) => {
            metrics.tls_rejected.inc();
            tracing::debug!(
                %peer,
                addr = %bind.addr,
                "TLS connection dropped: no ClientHello within {:?}",
                limits.client_hello_timeout
            );
            return;
        }
    };
    let sni = accepted.client_hello().server_name().map(str::to_ascii_lowercase);
    let Some((listener, route)) = Plan::route_tls(listeners, sni.as_deref()) else {
        metrics.tls_rejected.inc();
        tracing::debug!(%peer, ?sni, "TLS connection dropped: no route for this server name");
        return;
    };
    let backends = route.backends.clone();
    match &listener.terminate {
        None => {
            let Some(mut upstream) =
                crate::tcp::connect(&backends, limits.connect_timeout, peer, &metrics).await
            else {
                return;
            };
            if let Err(e) = upstream.write_all(&bytes).await {
                tracing::debug!(%peer, "replaying the ClientHello failed: {e}");
                return;
            }
            drop(bytes);
            if let Err(e) = crate::splice::splice(stream, upstream, limits.tcp_idle_timeout).await {
                tracing::debug!(%peer, "TLS passthrough ended: {e}");
            }
        }
        Some(config) => {
            let handshake =
                StartHandshake::from_parts(accepted, stream).into_stream(config.clone());
            let tls = match tokio::time::timeout(limits.client_hello_timeout, handshake).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, ?sni, "TLS handshake failed: {e}");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, ?sni, "TLS handshake did not finish in time");
                    return;
                }
            };
            let Some(upstream) =
                crate::tcp::connect(&backends, limits.connect_timeout, peer, &metrics).await
            else {
                return;
            };
            if let Err(e) = crate::splice::splice(tls, upstream, limits.tcp_idle_timeout).await {
                tracing::debug!(%peer, "TLS-terminated connection ended: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// The bytes a real rustls client sends first, for `name`.
    fn client_hello(name: &str) -> Vec<u8> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from(name.to_owned()).unwrap();
        let mut conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        let mut out = Vec::new();
        while conn.wants_write() {
            conn.write_tls(&mut out).unwrap();
        }
        out
    }

    #[tokio::test]
    async fn sni_is_read_from_a_hello_split_into_single_bytes() {
        let hello = client_hello("split.example.test");
        let mut builder = tokio_test_reader(&hello);
        let (accepted, bytes) = read_client_hello(&mut builder).await.unwrap();
        assert_eq!(accepted.client_hello().server_name(), Some("split.example.test"));
        assert_eq!(bytes, hello, "every byte kept for the replay");
    }

    #[tokio::test]
    async fn garbage_truncation_and_oversize_are_errors() {
        let mut garbage: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        assert!(matches!(read_client_hello(&mut garbage).await, Err(HelloError::Invalid(_))));
        let hello = client_hello("a.test");
        let mut cut = &hello[..hello.len() / 2];
        assert!(matches!(read_client_hello(&mut cut).await, Err(HelloError::Closed)));
        // A record header announcing a huge handshake that never ends.
        let mut endless = vec![0x16, 0x03, 0x01, 0x40, 0x00, 0x01, 0xff, 0xff, 0xff];
        endless.resize(200_000, 0);
        let mut endless = &endless[..];
        assert!(read_client_hello(&mut endless).await.is_err());
    }

    /// A reader that yields one byte per read, as a client writing byte by byte would.
    fn tokio_test_reader(bytes: &[u8]) -> impl tokio::io::AsyncRead + Unpin {
        let mut builder = tokio_test_builder();
        for b in bytes {
            builder = builder.chain_byte(*b);
        }
        builder.finish()
    }

    struct ByteReader(std::collections::VecDeque<u8>);

    impl ByteReader {
        fn chain_byte(mut self, b: u8) -> Self {
            self.0.push_back(b);
            self
        }
        fn finish(self) -> Self {
            self
        }
    }

    fn tokio_test_builder() -> ByteReader {
        ByteReader(Default::default())
    }

    impl tokio::io::AsyncRead for ByteReader {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _cx: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            if let Some(b) = self.0.pop_front() {
                buf.put_slice(&[b]);
            }
            std::task::Poll::Ready(Ok(()))
        }
    }
}
