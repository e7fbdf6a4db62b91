//! `header-modifier`: sets, adds and removes request and response headers, as Gateway API's
//! RequestHeaderModifier/ResponseHeaderModifier do, with values templated from properties.
//!
//! Configuration (JSON; every part optional):
//! `{"request": {"set": {"x-a": "1"}, "add": {"x-client": "{source.address}"}, "remove": ["x-b"]},
//!   "response": {...}}`. Order: remove, set, add. `{path.of.property}` is replaced by the
//! property's value (empty when unknown); `{{` is a literal `{`.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
use serde::Deserialize;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    request: Ops,
    #[serde(default)]
    response: Ops,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Ops {
    #[serde(default)]
    set: BTreeMap<String, String>,
    #[serde(default)]
    add: BTreeMap<String, String>,
    #[serde(default)]
    remove: Vec<String>,
}

/// A value: literal text and property references.
#[derive(Clone, Debug)]
enum Part {
    Text(String),
    Property(Vec<String>),
}

#[derive(Clone, Debug, Default)]
struct Compiled {
    set: Vec<(String, Vec<Part>)>,
    add: Vec<(String, Vec<Part>)>,
    remove: Vec<String>,
}

fn template(raw: &str) -> Result<Vec<Part>, String> {
    let mut parts = Vec::new();
    let mut text = String::new();
    let mut rest = raw;
    while let Some(i) = rest.find('{') {
        text.push_str(&rest[..i]);
        rest = &rest[i + 1..];
        if let Some(after) = rest.strip_prefix('{') {
            text.push('{');
            rest = after;
            continue;
        }
        let end = rest.find('}').ok_or_else(|| format!("unclosed {{ in {raw:?}"))?;
        let path = &rest[..end];
        if path.is_empty() || path.split('.').any(str::is_empty) {
            return Err(format!("bad property path {path:?} in {raw:?}"));
        }
        if !text.is_empty() {
            parts.push(Part::Text(std::mem::take(&mut text)));
        }
        parts.push(Part::Property(path.split('.').map(str::to_owned).collect()));
        rest = &rest[end + 1..];
    }
    text.push_str(rest);
    if !text.is_empty() {
        parts.push(Part::Text(text));
    }
    Ok(parts)
}

impl Compiled {
    fn from(ops: Ops) -> Result<Self, String> {
        let pairs = |m: BTreeMap<String, String>| -> Result<Vec<(String, Vec<Part>)>, String> {
            m.into_iter().map(|(k, v)| Ok((k.to_ascii_lowercase(), template(&v)?))).collect()
        };
        Ok(Self {
            set: pairs(ops.set)?,
            add: pairs(ops.add)?,
            remove: ops.remove.into_iter().map(|n| n.to_ascii_lowercase()).collect(),
        })
    }
}

/// The compiled edits, shared by every request's context (no copy per request).
#[derive(Default)]
struct Root {
    request: Rc<Compiled>,
    response: Rc<Compiled>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let raw = self.get_plugin_configuration().unwrap_or_default();
        let config: Config = if raw.is_empty() {
            Config::default()
        } else {
            match serde_json::from_slice(&raw) {
                Ok(c) => c,
                Err(e) => {
                    log::error!("header-modifier: bad configuration: {e}");
                    return false;
                }
            }
        };
        match (Compiled::from(config.request), Compiled::from(config.response)) {
            (Ok(req), Ok(resp)) => {
                self.request = Rc::new(req);
                self.response = Rc::new(resp);
                true
            }
            (Err(e), _) | (_, Err(e)) => {
                log::error!("header-modifier: bad configuration: {e}");
                false
            }
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Filter {
            request: Rc::clone(&self.request),
            response: Rc::clone(&self.response),
        }))
    }
}

struct Filter {
    request: Rc<Compiled>,
    response: Rc<Compiled>,
}

impl Context for Filter {}

/// Properties that are 8-byte little-endian integers.
fn is_integer(path: &[String]) -> bool {
    matches!(path.last().map(String::as_str), Some("port" | "code"))
}

impl Filter {
    /// The value of a template; a constant one is borrowed (no allocation per request).
    fn render<'a>(&self, parts: &'a [Part]) -> Cow<'a, str> {
        match parts {
            [] => return Cow::Borrowed(""),
            [Part::Text(t)] => return Cow::Borrowed(t),
            _ => {}
        }
        let mut out = String::new();
        for part in parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Property(path) => {
                    let value = self.get_property(path.iter().map(String::as_str).collect());
                    match value {
                        Some(v) if is_integer(path) && v.len() == 8 => {
                            let mut b = [0u8; 8];
                            b.copy_from_slice(&v);
                            out.push_str(&i64::from_le_bytes(b).to_string());
                        }
                        Some(v) => out.push_str(&String::from_utf8_lossy(&v)),
                        None => {}
                    }
                }
            }
        }
        Cow::Owned(out)
    }
}

impl HttpContext for Filter {
    fn on_http_request_headers(&mut self, _n: usize, _eos: bool) -> Action {
        let ops = Rc::clone(&self.request);
        for name in &ops.remove {
            self.set_http_request_header(name, None);
        }
        for (name, value) in &ops.set {
            let v = self.render(value);
            self.set_http_request_header(name, Some(&v));
        }
        for (name, value) in &ops.add {
            let v = self.render(value);
            self.add_http_request_header(name, &v);
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _n: usize, _eos: bool) -> Action {
        let ops = Rc::clone(&self.response);
        for name in &ops.remove {
            self.set_http_response_header(name, None);
        }
        for (name, value) in &ops.set {
            let v = self.render(value);
            self.set_http_response_header(name, Some(&v));
        }
        for (name, value) in &ops.add {
            let v = self.render(value);
            self.add_http_response_header(name, &v);
        }
        Action::Continue
    }
}
