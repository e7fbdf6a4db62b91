//! Relaying bytes both ways between two streams, with half-close and an idle timeout.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

const BUFFER: usize = 16 * 1024;

/// Copies `a` → `b` and `b` → `a` until both directions ended. A direction that reaches
/// end-of-stream shuts the other side's write half (half-close) while the opposite direction
/// goes on; an error in either ends both. With no byte in either direction for `idle`, both
/// end with [`io::ErrorKind::TimedOut`]. Returns the bytes copied each way.
pub(crate) async fn splice<A, B>(a: A, b: B, idle: Duration) -> io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (mut ar, mut aw) = tokio::io::split(a);
    let (mut br, mut bw) = tokio::io::split(b);
    let start = Instant::now();
    // Milliseconds since `start` of the last byte seen in either direction.
    let last = AtomicU64::new(0);
    let both = async {
        tokio::try_join!(copy(&mut ar, &mut bw, &last, start), copy(&mut br, &mut aw, &last, start))
    };
    let watchdog = async {
        loop {
            let deadline = start + Duration::from_millis(last.load(Ordering::Relaxed)) + idle;
            tokio::time::sleep_until(deadline).await;
            let seen = start + Duration::from_millis(last.load(Ordering::Relaxed));
            if Instant::now().duration_since(seen) >= idle {
                return;
            }
        }
    };
    tokio::select! {
        done = both => done,
        () = watchdog => Err(io::Error::new(io::ErrorKind::TimedOut, "idle timeout")),
    }
}

async fn copy<R, W>(r: &mut R, w: &mut W, last: &AtomicU64, start: Instant) -> io::Result<u64>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; BUFFER];
    let mut total = 0u64;
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            w.shutdown().await?;
            return Ok(total);
        }
        w.write_all(&buf[..n]).await?;
        total += n as u64;
        let now = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
        last.store(now, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::duplex;

    use super::*;

    #[tokio::test]
    async fn half_close_keeps_the_other_direction_open() {
        let (client, proxy_a) = duplex(64);
        let (proxy_b, backend) = duplex(64);
        let relay = tokio::spawn(splice(proxy_a, proxy_b, Duration::from_secs(30)));
        let (mut cr, mut cw) = tokio::io::split(client);
        let (mut br, mut bw) = tokio::io::split(backend);
        cw.write_all(b"ping").await.unwrap();
        cw.shutdown().await.unwrap();
        let mut got = Vec::new();
        br.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"ping", "the backend sees the client's end of stream");
        bw.write_all(b"pong after half-close").await.unwrap();
        bw.shutdown().await.unwrap();
        let mut back = Vec::new();
        cr.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"pong after half-close");
        assert_eq!(relay.await.unwrap().unwrap(), (4, 21));
    }

    #[tokio::test(start_paused = true)]
    async fn idle_connections_are_closed() {
        let (client, proxy_a) = duplex(64);
        let (proxy_b, _backend) = duplex(64);
        let relay = tokio::spawn(splice(proxy_a, proxy_b, Duration::from_secs(5)));
        let err = relay.await.unwrap().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        drop(client);
    }
}
