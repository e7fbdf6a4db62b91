//! Plain DNS queries over UDP: challenge records and the NS/SOA/CNAME lookups around them.

use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use futures_util::StreamExt;
use hickory_net::DnsHandle;
use hickory_net::client::Client;
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::udp::UdpClientStream;
use hickory_proto::op::{DnsRequest, DnsRequestOptions, Message, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, RecordType};

use super::DnsError;

/// How long one query may take before the server counts as unreachable.
pub(crate) const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// Parses an absolute DNS name.
pub(crate) fn name(raw: &str) -> Result<Name, DnsError> {
    let mut n = Name::from_str(raw).map_err(|e| DnsError::Settings {
        provider: "dns",
        message: format!("invalid DNS name {raw:?}: {e}"),
    })?;
    n.set_fqdn(true);
    Ok(n)
}

/// Sends one query to `server`; `recursive` sets RD. NXDOMAIN and NODATA come back as
/// answers (empty), not errors.
pub(crate) async fn query(
    server: SocketAddr,
    qname: &Name,
    rtype: RecordType,
    recursive: bool,
) -> Result<Message, DnsError> {
    let unreachable =
        |message: String| DnsError::Unreachable { server: server.to_string(), message };
    let stream = UdpClientStream::builder(server, TokioRuntimeProvider::default())
        .with_timeout(Some(QUERY_TIMEOUT))
        .build();
    let (client, bg) = Client::<TokioRuntimeProvider>::from_sender(stream);
    let bg = tokio::spawn(bg);
    let mut q = Query::query(qname.clone(), rtype);
    q.set_query_class(DNSClass::IN);
    let mut options = DnsRequestOptions::default();
    options.recursion_desired = recursive;
    options.use_edns = true;
    let result = client.send(DnsRequest::from_query(q, options)).next().await;
    bg.abort();
    match result {
        Some(Ok(response)) => Ok(response.into_message()),
        Some(Err(e)) => Err(unreachable(e.to_string())),
        None => Err(unreachable("no response".into())),
    }
}

/// The TXT strings at `qname` in an answer (multi-string records joined, as RFC 8555 reads them).
pub(crate) fn txt_values(message: &Message, qname: &Name) -> Vec<String> {
    message
        .answers
        .iter()
        .filter(|r| &r.name == qname)
        .filter_map(|r| match &r.data {
            RData::TXT(txt) => Some(
                txt.txt_data
                    .iter()
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect::<String>(),
            ),
            _ => None,
        })
        .collect()
}

/// Whether a response code means "answered" (the name may still have no data).
pub(crate) fn answered(message: &Message) -> bool {
    matches!(message.metadata.response_code, ResponseCode::NoError | ResponseCode::NXDomain)
}
