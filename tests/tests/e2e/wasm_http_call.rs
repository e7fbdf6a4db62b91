//! `proxy_http_call` through the real binary, proven with a filter written by someone else: the
//! proxy-wasm SDK's own `http_auth_random` example, built unmodified from the published crate.
//! It calls the upstream it names `httpbin` (`GET /bytes/1`) while the request waits, lets the
//! request through when the answer's first byte is even, and answers 403 otherwise. Here
//! `httpbin` is a per-plugin name for a real server on loopback. Calls from the root context
//! are proven with the shipped `ip-allow` plugin's remote list, fetched on its ticks.

use std::time::Duration;

use gatehouse_tests::{
    Appliance, Client, EchoBackend, ScriptedBackend, Step, TestCa, TlsEchoBackend, free_port,
    wasm_plugin,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use crate::wasm::{config, route};

fn plugin(name: &str, upstream: &str) -> String {
    let module = wasm_plugin("sdk-http-auth-random").display().to_string();
    let upstreams = if upstream.is_empty() {
        String::new()
    } else {
        format!("upstreams = [{{ name = \"httpbin\", address = \"{upstream}\" }}]\n")
    };
    format!("\n[[plugins]]\nname = \"{name}\"\nmodule = \"{module}\"\n{upstreams}")
}

#[tokio::test]
async fn the_sdk_http_auth_random_example_calls_its_upstream_while_the_request_waits() {
    let app = EchoBackend::start("app").await;
    // Answers "backend even\n": its first byte, 'b', is even.
    let even = ScriptedBackend::start("even", Vec::new()).await;
    // Answers JSON: its first byte, '{', is odd.
    let odd = EchoBackend::start("odd").await;
    // Answers after the example's 5 s call timeout.
    let slow = ScriptedBackend::start("slow", vec![Step::Delay(Duration::from_secs(20))]).await;
    let closed = free_port();
    let port = free_port();
    let plugins = [
        plugin("granted", &even.addr.to_string()),
        plugin("forbidden", &odd.addr.to_string()),
        plugin("refused", &format!("127.0.0.1:{closed}")),
        plugin("slow", &slow.addr.to_string()),
        plugin("unnamed", ""),
    ]
    .concat();
    let routes = ["granted", "forbidden", "refused", "slow", "unnamed"]
        .map(|name| route(name, &format!("{name}.example"), name, app.port()))
        .concat();
    let config = config(port, &plugins, &routes);
    let gh = Appliance::start_ready(&config, &[]).await;
    let url = format!("http://127.0.0.1:{port}/app");
    let get = |host: &'static str| {
        let url = url.clone();
        async move { Client::http1().get_host(&url, host).await.unwrap() }
    };

    // Granted: the call went to the named upstream as the filter wrote it, then the request.
    let reply = get("granted.example").await;
    assert_eq!(reply.status, 200, "{}", gh.logs());
    assert_eq!(reply.backend(), Some("app"));
    assert_eq!(reply.header("powered-by"), Some("proxy-wasm"));
    let seen = even.requests().await;
    assert_eq!(seen.len(), 1);
    assert_eq!((seen[0].method.as_str(), seen[0].path.as_str()), ("GET", "/bytes/1"));
    assert_eq!(seen[0].headers["host"], "httpbin.org");
    // Over HTTP/2 as well.
    let reply = Client::h2c().get_host(&url, "granted.example").await.unwrap();
    assert_eq!(reply.status, 200);

    // Forbidden by the answer's body: the filter's local response.
    let reply = get("forbidden.example").await;
    assert_eq!(reply.status, 403);
    assert_eq!(&reply.body[..], b"Access forbidden.\n");
    assert_eq!(reply.header("powered-by"), Some("proxy-wasm"));

    // A call that fails (refused, timed out) reaches the filter as an answer without a body:
    // this filter forbids, and nothing traps.
    assert_eq!(get("refused.example").await.status, 403);
    assert_eq!(get("slow.example").await.status, 403);

    // An upstream name the plugin has not been given is refused at dispatch (BadArgument);
    // this example unwraps it, so it traps and fails closed.
    assert_eq!(get("unnamed.example").await.status, 500);

    let metrics = Client::http1().get(&gh.admin_url("/metrics")).await.unwrap();
    let text = String::from_utf8_lossy(&metrics.body);
    for line in [
        r#"gatehouse_wasm_http_calls_total{plugin="granted",outcome="ok"} 2"#,
        r#"gatehouse_wasm_http_calls_total{plugin="forbidden",outcome="ok"} 1"#,
        r#"gatehouse_wasm_http_calls_total{plugin="refused",outcome="failed"} 1"#,
        r#"gatehouse_wasm_http_calls_total{plugin="slow",outcome="failed"} 1"#,
        r#"gatehouse_wasm_failures_total{plugin="unnamed",kind="trap"} 1"#,
    ] {
        assert!(text.contains(line), "{line} missing:\n{text}");
    }
}

#[tokio::test]
async fn a_call_to_a_tls_upstream_verifies_its_certificate_and_fails_cleanly_when_it_does_not() {
    let app = EchoBackend::start("app").await;
    let ca = TestCa::new();
    let (chain, key) = ca.leaf(&["authz.test"]);
    let authz = TlsEchoBackend::start("authz", &chain, &key, None).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.cert_pem).expect("write the CA");
    let module = wasm_plugin("sdk-http-auth-random").display().to_string();
    let plugin = |name: &str, server_name: &str| {
        format!(
            "\n[[plugins]]\nname = \"{name}\"\nmodule = \"{module}\"\nupstreams = [{{ name = \"httpbin\", \
             address = \"{}\", tls = {{ server_name = \"{server_name}\", ca_file = \"{}\" }} }}]\n",
            authz.addr,
            ca_file.display()
        )
    };
    let plugins = [plugin("verified", "authz.test"), plugin("wrong-name", "other.test")].concat();
    let routes = ["verified", "wrong-name"]
        .map(|name| route(name, &format!("{name}.example"), name, app.port()))
        .concat();
    let port = free_port();
    let gh = Appliance::start_ready(&config(port, &plugins, &routes), &[]).await;
    let url = format!("http://127.0.0.1:{port}/app");
    // The echo's JSON answer starts with '{' (odd): the example forbids either way; the
    // metrics and the log tell the verified call from the one whose certificate is for
    // another name.
    for host in ["verified.example", "wrong-name.example"] {
        let reply = Client::http1().get_host(&url, host).await.unwrap();
        assert_eq!(reply.status, 403, "{host}: {}", gh.logs());
    }
    let metrics = Client::http1().get(&gh.admin_url("/metrics")).await.unwrap();
    let text = String::from_utf8_lossy(&metrics.body);
    for line in [
        r#"gatehouse_wasm_http_calls_total{plugin="verified",outcome="ok"} 1"#,
        r#"gatehouse_wasm_http_calls_total{plugin="wrong-name",outcome="failed"} 1"#,
    ] {
        assert!(text.contains(line), "{line} missing:\n{text}");
    }
    assert!(!text.contains("gatehouse_wasm_failures_total"), "{text}");
    let logs = gh.logs();
    assert!(logs.contains("http call failed") && logs.contains("certificate"), "{logs}");
}

/// A server on loopback answering every request with 200 and the body last sent on the
/// returned channel, one request per connection.
async fn list_server(body: &str) -> (std::net::SocketAddr, watch::Sender<String>) {
    let listener =
        tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the list server");
    let addr = listener.local_addr().expect("the list server's address");
    let (tx, rx) = watch::channel(body.to_owned());
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let body = rx.borrow().clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(reply.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    (addr, tx)
}

#[tokio::test]
async fn ip_allow_fetches_its_remote_list_on_ticks_and_the_decision_follows_the_list() {
    let app = EchoBackend::start("app").await;
    let (lists, served) = list_server("# loopback\n127.0.0.0/8\n").await;
    let port = free_port();
    let plugins = format!(
        r#"
[[plugins]]
name = "remote-allow"
module = "{m}"
upstreams = [{{ name = "lists", address = "{lists}" }}]
config = {{ status = 451, remote = {{ upstream = "lists", path = "/allow.txt", refresh_seconds = 1 }} }}
"#,
        m = wasm_plugin("ip-allow").display(),
    );
    let routes = route("app", "app.example", "remote-allow", app.port());
    let gh = Appliance::start_ready(&config(port, &plugins, &routes), &[]).await;
    let url = format!("http://127.0.0.1:{port}/");
    // Until four requests in a row (every instance of the plugin) get `status`, polling.
    let settle = |status: u16| {
        let url = url.clone();
        async move {
            for _ in 0..200 {
                let mut all = true;
                for _ in 0..4 {
                    let reply = Client::http1().get_host(&url, "app.example").await.unwrap();
                    all &= reply.status == status;
                }
                if all {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            false
        }
    };
    assert!(settle(200).await, "127.0.0.1 not allowed by the served list: {}", gh.logs());
    served.send_replace("10.0.0.0/8\n".into());
    assert!(settle(451).await, "the new list was not taken: {}", gh.logs());
    // A malformed list is logged with its line and keeps the list in use; the next good one
    // is taken.
    served.send_replace("127.0.0.1/32\n127.0.0.1/99\n".into());
    let bad = "line 2: bad prefix";
    for _ in 0..200 {
        if gh.logs().contains(bad) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(gh.logs().contains(bad), "{}", gh.logs());
    assert_eq!(Client::http1().get_host(&url, "app.example").await.unwrap().status, 451);
    served.send_replace("127.0.0.1/32 # back\n".into());
    assert!(settle(200).await, "the last list was not taken: {}", gh.logs());

    let metrics = Client::http1().get(&gh.admin_url("/metrics")).await.unwrap();
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(
        text.contains(r#"gatehouse_wasm_http_calls_total{plugin="remote-allow",outcome="ok"}"#),
        "{text}"
    );
    assert!(!text.contains("gatehouse_wasm_failures_total{"), "{text}");
}
