//! Protocol upgrades (WebSocket) on HTTP/1.1: after the backend's `101 Switching Protocols`, the
//! client's and the backend's connections become one bidirectional byte tunnel, closed when
//! either side closes or after [`IDLE_TIMEOUT`] without a byte in either direction.

use std::time::Duration;

use http::header::{self, HeaderMap, HeaderValue};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A tunnel with no traffic either way for this long is closed.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// The protocol a request asks to upgrade to (`Connection: upgrade` and `Upgrade: …`, on
/// HTTP/1.1 only; HTTP/2 has no such upgrade).
pub(crate) fn requested(version: http::Version, headers: &HeaderMap) -> Option<HeaderValue> {
    if version != http::Version::HTTP_11 {
        return None;
    }
    let connection_upgrade = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    connection_upgrade.then(|| headers.get(header::UPGRADE).cloned()).flatten()
}

/// Puts back the upgrade headers the hop-by-hop strip removed.
pub(crate) fn restore(headers: &mut HeaderMap, protocol: &HeaderValue) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, protocol.clone());
}

/// Joins the two upgraded connections in a task of its own.
pub(crate) fn spawn(client: OnUpgrade, backend: OnUpgrade) {
    tokio::spawn(async move {
        let (client, backend) = match tokio::try_join!(client, backend) {
            Ok(both) => both,
            Err(e) => {
                tracing::debug!(error = %e, "upgrade failed");
                return;
            }
        };
        let mut client = TokioIo::new(client);
        let mut backend = TokioIo::new(backend);
        let mut up = vec![0u8; 16 * 1024];
        let mut down = vec![0u8; 16 * 1024];
        loop {
            let outcome = tokio::time::timeout(IDLE_TIMEOUT, async {
                tokio::select! {
                    n = client.read(&mut up) => match n {
                        Ok(0) | Err(_) => false,
                        Ok(n) => backend.write_all(&up[..n]).await.is_ok(),
                    },
                    n = backend.read(&mut down) => match n {
                        Ok(0) | Err(_) => false,
                        Ok(n) => client.write_all(&down[..n]).await.is_ok(),
                    },
                }
            })
            .await;
            if !matches!(outcome, Ok(true)) {
                break;
            }
        }
        let _ = client.shutdown().await;
        let _ = backend.shutdown().await;
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_http11_connection_upgrade_requests_upgrade() {
        let mut h = HeaderMap::new();
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(requested(http::Version::HTTP_11, &h).is_none(), "no Connection: upgrade");
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, Upgrade"));
        assert_eq!(requested(http::Version::HTTP_11, &h).unwrap(), "websocket");
        assert!(requested(http::Version::HTTP_2, &h).is_none());
    }
}
