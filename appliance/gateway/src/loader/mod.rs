//! Reads Gateway API manifests from YAML files into [`Object`]s.
//!
//! The loader only parses: the objects it returns are replayed into an [`crate::Index`] with
//! `apply`, exactly as a Kubernetes watch would feed it. Every problem is collected, each with
//! its place, so `gatehouse check` can print them all at once.

mod node;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::object::{Object, ObjectRef};
use node::{Lines, Node, NodeValue};

/// Files larger than this are refused before they are read.
pub const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// Directories nested deeper than this are not descended into (guards against symlink loops).
const MAX_DEPTH: usize = 32;

/// The only Secret type used (certificate chain and key for TLS listeners).
pub const TLS_SECRET_TYPE: &str = "kubernetes.io/tls";

/// What [`load`] found: the objects, the documents it skipped, and every error.
#[derive(Debug, Default)]
pub struct Loaded {
    pub objects: Vec<Object>,
    pub warnings: Vec<LoadWarning>,
    pub errors: Vec<LoadError>,
}

/// A place in a manifest file: the path and the 1-based line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Place {
    pub path: PathBuf,
    pub line: u64,
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.path.display(), self.line)
    }
}

/// A document that was skipped, with its place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadWarning {
    pub place: Place,
    pub message: String,
}

impl fmt::Display for LoadWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.place, self.message)
    }
}

/// A problem with a manifest path, a file's YAML, or one object; `Display` starts with the place.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    #[error("{}: {message}", path.display())]
    Io { path: PathBuf, message: String },
    #[error("{}: file is {size} bytes, more than the limit of {limit}", path.display())]
    TooLarge { path: PathBuf, size: u64, limit: u64 },
    #[error("{}:{line}:{column}: {message}", path.display())]
    Syntax { path: PathBuf, line: u64, column: u64, message: String },
    /// An object that could not be read; `object` is `Kind namespace/name` as far as known.
    #[error("{place}: {object}: {field}: {message}")]
    Object { place: Place, object: String, field: String, message: String },
    #[error("{second}: {object}: duplicate object, first defined at {first}")]
    Duplicate { object: String, first: Place, second: Place },
}

/// Loads every path: a file, or a directory meaning every `*.yaml`/`*.yml` below it, recursively,
/// in sorted path order. Objects with the same kind, namespace and name are errors.
pub fn load(paths: &[PathBuf]) -> Loaded {
    let mut loaded = Loaded::default();
    let mut seen = BTreeMap::new();
    for path in paths {
        let files = match manifest_files(path) {
            Ok(files) => files,
            Err(err) => {
                loaded.errors.push(err);
                continue;
            }
        };
        for file in files {
            match read_file(&file) {
                Ok(text) => parse_into(&file, &text, &mut loaded, &mut seen),
                Err(err) => loaded.errors.push(err),
            }
        }
    }
    loaded
}

/// Parses one multi-document YAML text; `path` is only used to name places.
pub fn load_str(path: &Path, text: &str) -> Loaded {
    let mut loaded = Loaded::default();
    parse_into(path, text, &mut loaded, &mut BTreeMap::new());
    loaded
}

fn io_error(path: &Path, err: &std::io::Error) -> LoadError {
    LoadError::Io { path: path.to_owned(), message: err.to_string() }
}

/// The files a manifest path stands for, sorted.
fn manifest_files(path: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let meta = std::fs::metadata(path).map_err(|e| io_error(path, &e))?;
    if !meta.is_dir() {
        return Ok(vec![path.to_owned()]);
    }
    let mut files = Vec::new();
    walk(path, 0, &mut files)?;
    files.sort();
    Ok(files)
}

fn walk(dir: &Path, depth: usize, files: &mut Vec<PathBuf>) -> Result<(), LoadError> {
    if depth > MAX_DEPTH {
        return Err(LoadError::Io {
            path: dir.to_owned(),
            message: format!("directories nested deeper than {MAX_DEPTH} levels"),
        });
    }
    let entries = std::fs::read_dir(dir).map_err(|e| io_error(dir, &e))?;
    for entry in entries {
        let entry = entry.map_err(|e| io_error(dir, &e))?;
        let path = entry.path();
        let meta = std::fs::metadata(&path).map_err(|e| io_error(&path, &e))?;
        if meta.is_dir() {
            walk(&path, depth + 1, files)?;
        } else if path.extension().is_some_and(|ext| ext == "yaml" || ext == "yml") {
            files.push(path);
        }
    }
    Ok(())
}

fn read_file(path: &Path) -> Result<String, LoadError> {
    let size = std::fs::metadata(path).map_err(|e| io_error(path, &e))?.len();
    if size > MAX_FILE_BYTES {
        return Err(LoadError::TooLarge { path: path.to_owned(), size, limit: MAX_FILE_BYTES });
    }
    let bytes = std::fs::read(path).map_err(|e| io_error(path, &e))?;
    // The file may have grown between the two calls.
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(LoadError::TooLarge {
            path: path.to_owned(),
            size: bytes.len() as u64,
            limit: MAX_FILE_BYTES,
        });
    }
    String::from_utf8(bytes)
        .map_err(|e| LoadError::Io { path: path.to_owned(), message: format!("not UTF-8: {e}") })
}

fn parse_into(path: &Path, text: &str, loaded: &mut Loaded, seen: &mut BTreeMap<ObjectRef, Place>) {
    // YAML 1.2 booleans only: `on`, `yes` and `y` stay strings, as Kubernetes' typed decoding
    // keeps them in string fields.
    let options = serde_saphyr::options! { strict_booleans: true, with_snippet: false };
    let docs: Vec<Node> = match serde_saphyr::from_multiple_with_options(text, options) {
        Ok(docs) => docs,
        Err(err) => {
            let err = err.without_snippet();
            let (line, column) = err.location().map_or((0, 0), |l| (l.line(), l.column()));
            let message = strip_location(&err.to_string());
            loaded.errors.push(LoadError::Syntax { path: path.to_owned(), line, column, message });
            return;
        }
    };
    for doc in docs {
        if matches!(doc.value, NodeValue::Null) {
            continue;
        }
        parse_document(path, doc, loaded, seen);
    }
}

/// serde-saphyr appends ` at line L, column C`; the place is printed in front instead.
fn strip_location(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(cut) => message[..cut].to_owned(),
        None => message.to_owned(),
    }
}

fn parse_document(
    path: &Path,
    doc: Node,
    loaded: &mut Loaded,
    seen: &mut BTreeMap<ObjectRef, Place>,
) {
    let place = Place { path: path.to_owned(), line: doc.line };
    let api_version = doc.str_field("apiVersion").unwrap_or_default().to_owned();
    let kind = doc.str_field("kind").unwrap_or_default().to_owned();
    let meta = doc.field("metadata");
    let name = meta.and_then(|m| m.str_field("name")).unwrap_or_default().to_owned();
    let namespace = meta.and_then(|m| m.str_field("namespace")).map(str::to_owned);
    let label = describe(&kind, namespace.as_deref(), &name);
    let object_error = |field: &str, message: String| LoadError::Object {
        place: place.clone(),
        object: label.clone(),
        field: field.to_owned(),
        message,
    };

    if !matches!(doc.value, NodeValue::Map(_)) {
        loaded.errors.push(object_error(".", "a document must be a mapping".into()));
        return;
    }
    if api_version.is_empty() || kind.is_empty() {
        let field = if api_version.is_empty() { "apiVersion" } else { "kind" };
        loaded.errors.push(object_error(field, "is required".into()));
        return;
    }
    if kind == "List" && api_version == "v1" {
        parse_list(path, doc, loaded, seen);
        return;
    }

    let convert = match converter(&api_version, &kind) {
        Ok(convert) => convert,
        Err(Unread::BadVersion(message)) => {
            loaded.errors.push(object_error("apiVersion", message));
            return;
        }
        Err(Unread::Skipped(message)) => {
            loaded.warnings.push(LoadWarning { place, message: format!("{label}: {message}") });
            return;
        }
    };

    let (value, lines) = doc.into_json();
    let mut object = match convert(value, &lines) {
        Ok(object) => object,
        Err(FieldError { field, message, line }) => {
            let mut err = object_error(&field, message);
            if let (LoadError::Object { place, .. }, Some(line)) = (&mut err, line) {
                place.line = line;
            }
            loaded.errors.push(err);
            return;
        }
    };
    if name.is_empty() {
        loaded.errors.push(object_error("metadata.name", "is required".into()));
        return;
    }
    if let Some(message) = unused_secret(&object) {
        loaded.warnings.push(LoadWarning { place, message: format!("{label}: {message}") });
        return;
    }
    if object.kind().is_namespaced() {
        default_namespace(&mut object);
    }
    let key = object.object_ref();
    if let Some(first) = seen.get(&key) {
        loaded.errors.push(LoadError::Duplicate {
            object: key.to_string(),
            first: first.clone(),
            second: place,
        });
        return;
    }
    seen.insert(key, place);
    loaded.objects.push(object);
}

/// Why a document or object of some `apiVersion` and `kind` is not read.
enum Unread {
    /// A kind we read, in a version we do not: an error.
    BadVersion(String),
    /// A kind we do not read (yet): skipped with a warning.
    Skipped(String),
}

/// The conversion for one `apiVersion` and `kind`; YAML documents and cluster objects share it.
fn converter(api_version: &str, kind: &str) -> Result<Convert, Unread> {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    match (group, kind) {
        ("gateway.networking.k8s.io", "GRPCRoute") if version == "v1" => {
            Ok(|v, l| typed(v, l).map(Object::GrpcRoute))
        }
        (
            "gateway.networking.k8s.io",
            "GatewayClass" | "Gateway" | "HTTPRoute" | "ReferenceGrant",
        ) if matches!(version, "v1" | "v1beta1") => Ok(match kind {
            "GatewayClass" => |v, l| typed(v, l).map(Object::GatewayClass),
            "Gateway" => |v, l| typed(v, l).map(Object::Gateway),
            "HTTPRoute" => |v, l| typed(v, l).map(Object::HttpRoute),
            _ => |v, l| typed(v, l).map(Object::ReferenceGrant),
        }),
        ("gateway.networking.k8s.io", "TCPRoute") if version == "v1alpha2" => {
            Ok(|v, l| typed(v, l).map(Object::TcpRoute))
        }
        ("gateway.networking.k8s.io", "UDPRoute") if version == "v1alpha2" => {
            Ok(|v, l| typed(v, l).map(Object::UdpRoute))
        }
        ("gateway.networking.k8s.io", "TLSRoute")
            if matches!(version, "v1" | "v1alpha3" | "v1alpha2") =>
        {
            Ok(|v, l| typed(v, l).map(Object::TlsRoute))
        }
        ("", "Namespace") if version == "v1" => Ok(|v, l| typed(v, l).map(Object::Namespace)),
        ("", "Service") if version == "v1" => Ok(|v, l| typed(v, l).map(Object::Service)),
        ("", "Secret") if version == "v1" => Ok(|v, l| typed(v, l).map(Object::Secret)),
        ("", "Node") if version == "v1" => {
            Ok(|v, l| typed(v, l).map(|n| Object::Node(Box::new(n))))
        }
        ("discovery.k8s.io", "EndpointSlice") if version == "v1" => {
            Ok(|v, l| typed(v, l).map(Object::EndpointSlice))
        }
        ("gatehouse.dev", "WasmPlugin") if version == "v1alpha1" => {
            Ok(|v, l| typed(v, l).map(Object::WasmPlugin))
        }
        ("gateway.networking.k8s.io", "ListenerSet") if version == "v1" => {
            Ok(|v, l| typed(v, l).map(Object::ListenerSet))
        }
        ("gateway.networking.k8s.io", "BackendTLSPolicy") if version == "v1" => {
            Ok(|v, l| typed(v, l).map(Object::BackendTlsPolicy))
        }
        ("", "ConfigMap") if version == "v1" => Ok(|v, l| typed(v, l).map(Object::ConfigMap)),
        (
            "gateway.networking.k8s.io",
            "GatewayClass" | "Gateway" | "HTTPRoute" | "GRPCRoute" | "ReferenceGrant" | "TCPRoute"
            | "UDPRoute" | "TLSRoute" | "BackendTLSPolicy",
        )
        | ("", "Namespace" | "Service" | "Secret" | "Node" | "ConfigMap")
        | ("discovery.k8s.io", "EndpointSlice")
        | ("gatehouse.dev", "WasmPlugin")
        | ("gateway.networking.k8s.io", "ListenerSet") => {
            Err(Unread::BadVersion(format!("{api_version} is not a supported version of {kind}")))
        }
        ("gateway.networking.k8s.io", _) => {
            Err(Unread::Skipped(format!("skipped, {kind} is not supported yet")))
        }
        _ => Err(Unread::Skipped(format!(
            "skipped, {api_version} {kind} is not a kind gatehouse reads"
        ))),
    }
}

/// Why a Secret is not used, if it is one we ignore.
fn unused_secret(object: &Object) -> Option<String> {
    match object {
        Object::Secret(secret) if secret.type_.as_deref() != Some(TLS_SECRET_TYPE) => {
            Some(format!("skipped, only Secrets of type {TLS_SECRET_TYPE} are used"))
        }
        _ => None,
    }
}

/// Why one JSON object (as a Kubernetes API server sends it) could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JsonError {
    /// A kind or version gatehouse does not read, or a Secret that is not a TLS Secret.
    #[error("{object}: {message}")]
    Unsupported { object: String, message: String },
    /// An object of a kind we read that does not deserialize; `field` is its path.
    #[error("{object}: {field}: {message}")]
    Invalid { object: String, field: String, message: String },
}

/// Converts one object as JSON (a watch event's object, a list item) into an [`Object`], through
/// the same conversion as a YAML document. Namespaced objects without a namespace go to
/// `default`.
pub fn from_json(value: Value) -> Result<Object, JsonError> {
    let field = |key: &str| value.get(key).and_then(Value::as_str).unwrap_or_default().to_owned();
    let api_version = field("apiVersion");
    let kind = field("kind");
    let meta = value.get("metadata");
    let meta_field = |key: &str| meta.and_then(|m| m.get(key)).and_then(Value::as_str);
    let name = meta_field("name").unwrap_or_default().to_owned();
    let object = describe(&kind, meta_field("namespace"), &name);
    let invalid = |field: &str, message: String| JsonError::Invalid {
        object: object.clone(),
        field: field.to_owned(),
        message,
    };
    if api_version.is_empty() || kind.is_empty() {
        let field = if api_version.is_empty() { "apiVersion" } else { "kind" };
        return Err(invalid(field, "is required".into()));
    }
    let convert = converter(&api_version, &kind).map_err(|unread| match unread {
        Unread::BadVersion(message) => invalid("apiVersion", message),
        Unread::Skipped(message) => JsonError::Unsupported { object: object.clone(), message },
    })?;
    let mut converted = convert(value, &Lines::default())
        .map_err(|FieldError { field, message, .. }| invalid(&field, message))?;
    if name.is_empty() {
        return Err(invalid("metadata.name", "is required".into()));
    }
    if let Some(message) = unused_secret(&converted) {
        return Err(JsonError::Unsupported { object, message });
    }
    if converted.kind().is_namespaced() {
        default_namespace(&mut converted);
    }
    Ok(converted)
}

/// A `v1 List` (as `kubectl get -o yaml` writes): each item is a document of its own.
fn parse_list(path: &Path, doc: Node, loaded: &mut Loaded, seen: &mut BTreeMap<ObjectRef, Place>) {
    let NodeValue::Map(entries) = doc.value else { return };
    for (key, value) in entries {
        if key.value != "items" {
            continue;
        }
        if let NodeValue::Seq(items) = value.value {
            for item in items {
                parse_document(path, item, loaded, seen);
            }
        }
    }
}

fn describe(kind: &str, namespace: Option<&str>, name: &str) -> String {
    let kind = if kind.is_empty() { "object" } else { kind };
    let name = if name.is_empty() { "<unnamed>" } else { name };
    match namespace {
        Some(ns) => format!("{kind} {ns}/{name}"),
        None => format!("{kind} {name}"),
    }
}

/// Why an object did not deserialize: the field path, the message and the field's line.
struct FieldError {
    field: String,
    message: String,
    line: Option<u64>,
}

/// Converts one document's JSON into a typed object.
type Convert = fn(Value, &Lines) -> Result<Object, FieldError>;

/// Deserializes with the failing field path and its line.
fn typed<T: DeserializeOwned>(value: Value, lines: &Lines) -> Result<T, FieldError> {
    serde_path_to_error::deserialize(value).map_err(|err| {
        let mut field = path_key(err.path());
        let message = err.inner().to_string();
        // An unknown field is reported at its parent; name the field itself.
        if let Some(unknown) = message
            .strip_prefix("unknown field `")
            .and_then(|rest| rest.split_once('`'))
            .map(|(name, _)| name)
            && !field.ends_with(unknown)
        {
            field =
                if field.is_empty() { unknown.to_owned() } else { format!("{field}.{unknown}") };
        }
        let line = lines.find(&field);
        if field.is_empty() {
            field.push('.');
        }
        FieldError { field, message, line }
    })
}

/// `spec.listeners[0].port`, the same form `node::Lines` is keyed by.
fn path_key(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Unknown => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push('?');
            }
        }
    }
    out
}

/// Namespaced objects without a namespace go to `default`, as `kubectl apply` does.
fn default_namespace(object: &mut Object) {
    let meta = match object {
        Object::Gateway(o) => &mut o.metadata,
        Object::HttpRoute(o) => &mut o.metadata,
        Object::ReferenceGrant(o) => &mut o.metadata,
        Object::Service(o) => &mut o.metadata,
        Object::EndpointSlice(o) => &mut o.metadata,
        Object::Secret(o) => &mut o.metadata,
        Object::WasmPlugin(o) => &mut o.metadata,
        Object::ListenerSet(o) => &mut o.metadata,
        Object::TcpRoute(o) => &mut o.metadata,
        Object::UdpRoute(o) => &mut o.metadata,
        Object::TlsRoute(o) => &mut o.metadata,
        Object::BackendTlsPolicy(o) => &mut o.metadata,
        Object::ConfigMap(o) => &mut o.metadata,
        Object::GrpcRoute(o) => &mut o.metadata,
        Object::GatewayClass(_) | Object::Namespace(_) | Object::Node(_) => return,
    };
    meta.namespace.get_or_insert_with(|| "default".to_owned());
}

#[cfg(test)]
mod tests;
