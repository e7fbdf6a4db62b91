//! A minimal WebSocket echo server (RFC 6455: the opening handshake, then every client frame
//! unmasked and sent back as a server frame) and a client that upgrades through the proxy.

use std::net::SocketAddr;

use aws_lc_rs::digest;
use base64::Engine;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key`.
pub fn websocket_accept(key: &str) -> String {
    let hash = digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, format!("{key}{GUID}").as_bytes());
    base64::engine::general_purpose::STANDARD.encode(hash.as_ref())
}

/// Reads an HTTP head (up to the blank line), at most 16 KiB.
async fn read_head<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 16 * 1024 || r.read(&mut byte).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        head.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// One frame: FIN + opcode, payload (unmasked). Payloads up to 64 KiB.
async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<(u8, Vec<u8>)> {
    let mut h = [0u8; 2];
    r.read_exact(&mut h).await?;
    let masked = h[1] & 0x80 != 0;
    let mut len = u64::from(h[1] & 0x7f);
    if len == 126 {
        let mut l = [0u8; 2];
        r.read_exact(&mut l).await?;
        len = u64::from(u16::from_be_bytes(l));
    } else if len == 127 {
        return Err(std::io::ErrorKind::InvalidData.into());
    }
    let mut mask = [0u8; 4];
    if masked {
        r.read_exact(&mut mask).await?;
    }
    let mut payload = vec![0u8; usize::try_from(len).unwrap_or(0)];
    r.read_exact(&mut payload).await?;
    if masked {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= mask[i % 4];
        }
    }
    Ok((h[0], payload))
}

/// A frame with FIN, `opcode`, and the payload masked with `mask` when given.
fn frame(opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = vec![0x80 | opcode];
    let bit = if mask.is_some() { 0x80 } else { 0 };
    if payload.len() < 126 {
        out.push(bit | payload.len() as u8);
    } else {
        out.push(bit | 126);
        out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    }
    match mask {
        Some(m) => {
            out.extend_from_slice(&m);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ m[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// The WebSocket echo server on 127.0.0.1.
#[derive(Debug)]
pub struct WebSocketEcho {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl WebSocketEcho {
    /// Starts a server on an ephemeral loopback port.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind websocket echo");
        let addr = listener.local_addr().expect("local addr");
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                tokio::spawn(async move {
                    let _ = serve(stream).await;
                });
            }
        });
        Self { addr, task }
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

impl Drop for WebSocketEcho {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(mut stream: TcpStream) -> std::io::Result<()> {
    let head = read_head(&mut stream).await?;
    let upgrade = header(&head, "upgrade").is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let Some(key) = header(&head, "sec-websocket-key").filter(|_| upgrade) else {
        stream.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n").await?;
        return Ok(());
    };
    let reply = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\nX-Echo-Backend: websocket\r\n\r\n",
        websocket_accept(key)
    );
    stream.write_all(reply.as_bytes()).await?;
    loop {
        let (h, payload) = read_frame(&mut stream).await?;
        let opcode = h & 0x0f;
        stream.write_all(&frame(opcode, &payload, None)).await?;
        if opcode == 0x8 {
            return Ok(());
        }
    }
}

/// A WebSocket client connection (after a successful upgrade).
#[derive(Debug)]
pub struct WebSocketClient {
    stream: TcpStream,
    /// The `101` response head.
    pub head: String,
}

impl WebSocketClient {
    /// Connects to `addr` and upgrades `GET path` for `host`; the response head is returned
    /// as the error when it is not a valid `101` (a wrong `Sec-WebSocket-Accept` included).
    pub async fn connect(addr: SocketAddr, host: &str, path: &str) -> Result<Self, String> {
        let mut stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let key = base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 16]>());
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(req.as_bytes()).await.map_err(|e| e.to_string())?;
        let head = read_head(&mut stream).await.map_err(|e| e.to_string())?;
        let ok = head.starts_with("HTTP/1.1 101")
            && header(&head, "sec-websocket-accept") == Some(websocket_accept(&key).as_str());
        if !ok {
            return Err(head);
        }
        Ok(Self { stream, head })
    }

    /// Sends a text message and returns the echoed one.
    pub async fn echo(&mut self, text: &str) -> Result<String, String> {
        let out = frame(0x1, text.as_bytes(), Some(rand::random()));
        self.stream.write_all(&out).await.map_err(|e| e.to_string())?;
        let (_, payload) = read_frame(&mut self.stream).await.map_err(|e| e.to_string())?;
        String::from_utf8(payload).map_err(|e| e.to_string())
    }
}
