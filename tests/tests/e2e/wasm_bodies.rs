//! Bodies streamed through a proxy-wasm plugin (the test-only `body-tap`), through the real
//! binary: chunk by chunk in both directions, held until the end on `Action::Pause`, bounded
//! by the body limit, and a local response from a body callback.

use std::time::Duration;

use gatehouse_tests::{Appliance, ScriptedBackend, Step, free_port, wasm_plugin};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(10);

fn config(port: u16, backend: u16) -> String {
    let plugins = format!(
        "[[plugins]]\nname = \"tap\"\nmodule = \"{}\"\n",
        wasm_plugin("body-tap").display()
    );
    let routes = format!(
        r#"[[routes]]
name = "tapped"
parents = ["web"]
  [[routes.rules]]
  filters = [{{ wasm = {{ plugin = "tap" }} }}]
  backends = [{{ address = "127.0.0.1:{backend}" }}]
"#
    );
    crate::wasm::config(port, &plugins, &routes)
}

/// Reads from `stream` into `seen` until it contains `needle`.
async fn read_until(stream: &mut TcpStream, seen: &mut Vec<u8>, needle: &str) {
    let found = tokio::time::timeout(WAIT, async {
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(seen).contains(needle) {
            let n = stream.read(&mut buf).await.expect("read");
            assert!(n > 0, "closed before {needle:?}; got {:?}", String::from_utf8_lossy(seen));
            seen.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    assert!(
        found.is_ok(),
        "no {needle:?} within {WAIT:?}; got {:?}",
        String::from_utf8_lossy(seen)
    );
}

#[tokio::test]
async fn bodies_stream_chunk_by_chunk_through_a_plugin_in_both_directions() {
    // A raw backend: it tells the test what it has seen, and sends its response in two chunks
    // with a handshake between them, so nothing can pass unless the proxy streams.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend_port = listener.local_addr().unwrap().port();
    let (saw, mut backend_saw) = mpsc::channel::<&'static str>(4);
    let (go_on, mut backend_go_on) = mpsc::channel::<()>(1);
    let backend = tokio::spawn(async move {
        let (mut conn, _) = listener.accept().await.unwrap();
        let mut seen = Vec::new();
        read_until(&mut conn, &mut seen, "[6]first!").await;
        saw.send("first").await.unwrap();
        read_until(&mut conn, &mut seen, "[7]second!").await;
        read_until(&mut conn, &mut seen, "0\r\n\r\n").await;
        saw.send("end").await.unwrap();
        let head =
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-type: text/plain\r\n\r\n";
        conn.write_all(format!("{head}5\r\nalpha\r\n").as_bytes()).await.unwrap();
        backend_go_on.recv().await.unwrap();
        conn.write_all(b"5\r\nomega\r\n0\r\n\r\n").await.unwrap();
        String::from_utf8_lossy(&seen).into_owned()
    });

    let port = free_port();
    let gh = Appliance::start_ready(&config(port, backend_port), &[]).await;
    let mut client = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    client
        .write_all(
            b"POST /up HTTP/1.1\r\nhost: tap.example\r\nx-body-tap: tag\r\n\
              transfer-encoding: chunked\r\n\r\n6\r\nfirst!\r\n",
        )
        .await
        .unwrap();
    // The first chunk reached the backend, tagged, before the second one exists.
    let got = tokio::time::timeout(WAIT, backend_saw.recv()).await;
    assert_eq!(got.ok().flatten(), Some("first"), "logs:\n{}", gh.logs());
    client.write_all(b"7\r\nsecond!\r\n0\r\n\r\n").await.unwrap();
    assert_eq!(tokio::time::timeout(WAIT, backend_saw.recv()).await.ok().flatten(), Some("end"));

    // The response's first chunk reaches the client, tagged, before the backend sends the rest.
    let mut reply = Vec::new();
    read_until(&mut client, &mut reply, "[5]alpha").await;
    go_on.send(()).await.unwrap();
    read_until(&mut client, &mut reply, "[5]omega").await;
    read_until(&mut client, &mut reply, "0\r\n\r\n").await;
    let reply = String::from_utf8_lossy(&reply).into_owned();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(!reply.to_ascii_lowercase().contains("content-length"), "{reply}");

    let upstream = backend.await.unwrap();
    assert!(upstream.to_ascii_lowercase().contains("transfer-encoding: chunked"), "{upstream}");
    // One tag per body callback with data: the chunks were not merged into one.
    assert_eq!(upstream.matches("[6]first!").count(), 1, "{upstream}");
    assert_eq!(upstream.matches("[7]second!").count(), 1, "{upstream}");
}

#[tokio::test]
async fn a_paused_plugin_holds_the_body_up_to_its_limit_and_a_body_callback_can_answer() {
    let backend = ScriptedBackend::start("held", vec![Step::Status(200)]).await;
    let port = free_port();
    let gh = Appliance::start_ready(&config(port, backend.port()), &[]).await;

    // `hold`: the chunks are held until the end, then passed on whole, in upper case.
    let mut client = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    client
        .write_all(
            b"POST /hold HTTP/1.1\r\nhost: tap.example\r\nx-body-tap: hold\r\n\
              transfer-encoding: chunked\r\n\r\n3\r\nabc\r\n",
        )
        .await
        .unwrap();
    client.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    client.write_all(b"4\r\ndefg\r\n0\r\n\r\n").await.unwrap();
    let mut reply = Vec::new();
    read_until(&mut client, &mut reply, "\r\n\r\n").await;
    assert!(String::from_utf8_lossy(&reply).starts_with("HTTP/1.1 200"), "logs:\n{}", gh.logs());
    let seen = backend.wait_requests(1, WAIT).await;
    assert_eq!(seen.len(), 1);
    assert_eq!(&seen[0].body[..], b"ABCDEFG");

    // Held past the plugin's body limit (1 MiB): 413, the upstream never gets a whole body.
    let big = vec![b'x'; (1 << 20) + 4096];
    let reply = post(port, "hold", &big).await;
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");

    // `refuse`: the first body callback answers in place of the upstream.
    let reply = post(port, "refuse", b"anything").await;
    assert!(reply.starts_with("HTTP/1.1 403"), "{reply}");
    assert!(reply.contains("refused by body-tap"), "{reply}");
    assert!(reply.to_ascii_lowercase().contains("x-body-tap: refused"), "{reply}");

    // The proxy still serves, and the held request was the only one that reached the backend
    // whole.
    let reply = post(port, "none", b"plain").await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let seen = backend.requests().await;
    assert!(seen.iter().all(|s| s.body.len() < 1 << 20), "an over-limit body went through");
}

/// POSTs `body` with `Content-Length` and the `x-body-tap` mode; returns the raw response.
async fn post(port: u16, mode: &str, body: &[u8]) -> String {
    let mut client = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    let head = format!(
        "POST /{mode} HTTP/1.1\r\nhost: tap.example\r\nx-body-tap: {mode}\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    client.write_all(head.as_bytes()).await.expect("write the head");
    // The proxy may answer (and close) before it read everything: a failed write is fine.
    let _ = client.write_all(body).await;
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(WAIT, client.read_to_end(&mut reply)).await;
    String::from_utf8_lossy(&reply).into_owned()
}
