//! Properties (`proxy_get_property`/`proxy_set_property`). A path is its segments joined by NUL.
//!
//! Readable properties (strings unless noted; integers are 8-byte little-endian):
//!
//! | path | value |
//! |---|---|
//! | `request.path` | path and query as received (`:path`) |
//! | `request.url_path` | path without the query |
//! | `request.query` | query string without `?` |
//! | `request.method` | method |
//! | `request.host` | `:authority` |
//! | `request.scheme` | `http` or `https` |
//! | `request.protocol` | `HTTP/1.1` or `HTTP/2` |
//! | `request.headers` | every request header, in the header-map serialisation |
//! | `request.headers.<name>` | one request header (values joined by `,`) |
//! | `source.address` / `source.port` | client `ip:port` / port (int) |
//! | `destination.address` / `destination.port` | local socket `ip:port` / port (int) |
//! | `connection.requested_server_name` | TLS SNI, empty without TLS |
//! | `connection.tls` | `true`/`false` |
//! | `route_name` (also `xds.route_name`) | `namespace/name` of the matched route |
//! | `listener_name` | `namespace/gateway/listener` |
//! | `plugin_name` (also `xds.plugin_name`), `plugin_root_id`, `plugin_vm_id` | the plugin's name |
//! | `response.code` | status (int), in response callbacks |
//!
//! Anything a guest set with `proxy_set_property` reads back under the same path.

use http::HeaderName;
use wasmtime::{Caller, Linker};

use crate::abi::{Answer, Status, answer, headers, memory};
use crate::state::HostState;

pub(crate) fn link(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap("env", "proxy_get_property", get)?;
    linker.func_wrap("env", "proxy_set_property", set)?;
    Ok(())
}

/// Normalises a NUL-separated path to dotted form (`request\0path` → `request.path`).
fn dotted(raw: &[u8]) -> Result<String, Status> {
    let s = std::str::from_utf8(raw).map_err(|_| Status::BadArgument)?;
    Ok(s.trim_end_matches('\0').replace('\0', "."))
}

/// Reads one property by dotted path; `None` when unknown or not available here.
pub fn lookup(state: &HostState, path: &str) -> Option<Vec<u8>> {
    let plugin = &state.plugin.name;
    match path {
        "plugin_name" | "xds.plugin_name" | "plugin_root_id" | "plugin_vm_id" => {
            return Some(plugin.as_bytes().to_vec());
        }
        _ => {}
    }
    let Some(http) = state.http.as_ref() else {
        return state.root_properties.get(path).cloned();
    };
    if let Some(v) = http.properties.get(path) {
        return Some(v.clone());
    }
    let info = &http.info;
    let req = &http.request;
    let str_of = |s: &str| Some(s.as_bytes().to_vec());
    match path {
        "request.path" => str_of(req.pseudo(":path")?),
        "request.url_path" => str_of(req.pseudo(":path")?.split('?').next().unwrap_or_default()),
        "request.query" => str_of(req.pseudo(":path")?.split_once('?').map_or("", |(_, q)| q)),
        "request.method" => str_of(req.pseudo(":method")?),
        "request.host" => str_of(req.pseudo(":authority")?),
        "request.scheme" => str_of(req.pseudo(":scheme")?),
        "request.protocol" => str_of(info.protocol),
        "request.headers" => Some(headers::serialize(
            req.headers.iter().map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes())),
        )),
        "source.address" => str_of(&info.source.to_string()),
        "source.port" => Some(i64::from(info.source.port()).to_le_bytes().to_vec()),
        "destination.address" => str_of(&info.destination.to_string()),
        "destination.port" => Some(i64::from(info.destination.port()).to_le_bytes().to_vec()),
        "connection.requested_server_name" => str_of(info.server_name.as_deref().unwrap_or("")),
        "connection.tls" => str_of(if info.tls { "true" } else { "false" }),
        "route_name" | "xds.route_name" => str_of(&info.route_name),
        "listener_name" => str_of(&info.listener_name),
        "response.code" => {
            let code: i64 = http.response.pseudo(":status")?.parse().ok()?;
            Some(code.to_le_bytes().to_vec())
        }
        _ => {
            let name = path.strip_prefix("request.headers.")?;
            let name = HeaderName::from_bytes(name.as_bytes()).ok()?;
            let values: Vec<&[u8]> =
                req.headers.get_all(name).iter().map(|v| v.as_bytes()).collect();
            (!values.is_empty()).then(|| values.join(&b','))
        }
    }
}

fn get(
    mut caller: Caller<'_, HostState>,
    path_ptr: u32,
    path_len: u32,
    ret_ptr: u32,
    ret_len: u32,
) -> Answer {
    let path = match memory::read(&mut caller, path_ptr, path_len)
        .map_err(Status::from)
        .and_then(|p| dotted(&p))
    {
        Ok(p) => p,
        Err(s) => return answer(Err(s)),
    };
    let Some(value) = lookup(caller.data(), &path) else { return answer(Err(Status::NotFound)) };
    answer(memory::hand_over(&mut caller, &value, ret_ptr, ret_len)?)
}

/// Most properties a guest may store per request or per root context.
const MAX_SET_PROPERTIES: usize = 64;
const MAX_PROPERTY_BYTES: u32 = 64 * 1024;

fn set(
    mut caller: Caller<'_, HostState>,
    path_ptr: u32,
    path_len: u32,
    ptr: u32,
    len: u32,
) -> Answer {
    if len > MAX_PROPERTY_BYTES || path_len > MAX_PROPERTY_BYTES {
        return answer(Err(Status::BadArgument));
    }
    let read = memory::read(&mut caller, path_ptr, path_len)
        .map_err(Status::from)
        .and_then(|p| dotted(&p))
        .and_then(|p| Ok((p, memory::read(&mut caller, ptr, len)?)));
    let (path, value) = match read {
        Ok(pv) => pv,
        Err(s) => return answer(Err(s)),
    };
    let state = caller.data_mut();
    let props = match state.http.as_mut() {
        Some(http) => &mut http.properties,
        None => &mut state.root_properties,
    };
    if props.len() >= MAX_SET_PROPERTIES && !props.contains_key(&path) {
        return answer(Err(Status::InternalFailure));
    }
    props.insert(path, value);
    answer(Ok(()))
}
