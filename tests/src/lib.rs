//! End-to-end test harness: starts the real `gatehouse` binary with files in a temporary
//! directory, real echo backends on loopback, and real HTTP/1.1, h2c and TLS clients.
//!
//! Every process and socket a test makes lives on 127.0.0.1 and ends with the test (drop
//! kills the appliance; backends stop with the runtime).

mod acme_peers;
mod appliance;
mod ca_faults;
mod client;
mod echo;
mod fake_kube;
mod grpc;
mod manifests;
mod pki;
mod plugins;
mod scripted;
mod tls_backend;
mod websocket;

pub use acme_peers::{Bind9, Pebble, PebbleOptions, acme_peers_installed, pebble_issuer_toml};
pub use appliance::{Appliance, gatehouse_bin};
pub use ca_faults::{CaFault, CaRequest, FaultyCa};
pub use client::{Client, Reply};
pub use echo::EchoBackend;
pub use fake_kube::{FakeKube, RecordedLeaseWrite, RecordedPatch, SentEvent};
pub use grpc::{ChannelBody, GrpcCall, GrpcClient, GrpcEcho, GrpcReply, frame_message};
pub use manifests::service_manifest;
pub use pki::TestCa;
pub use plugins::wasm_plugin;
pub use scripted::{ScriptedBackend, Seen, Step};
pub use tls_backend::TlsEchoBackend;
pub use websocket::{WebSocketClient, WebSocketEcho, websocket_accept};

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local addr").port()
}
