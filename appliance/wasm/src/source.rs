//! Module sources: a local file (optionally pinned by sha256), or a URL with a mandatory sha256,
//! fetched once, verified and kept under `<state_dir>/wasm/sources/<sha256>.wasm`.

use std::path::Path;
use std::time::Duration;

use gatehouse_model::ModuleSource;
use http_body_util::{BodyExt, Empty, Limited};

use crate::cache::sha256_hex;
use crate::error::WasmError;

/// Largest module we read or fetch.
pub const MAX_MODULE_BYTES: u64 = 64 << 20;

/// How long one fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(60);

/// Reads or fetches a module; returns its bytes and sha256.
pub(crate) async fn load(
    source: &ModuleSource,
    cache_dir: Option<&Path>,
) -> Result<(Vec<u8>, String), WasmError> {
    match source {
        ModuleSource::Path { path, sha256 } => {
            let what = path.display().to_string();
            let read_err = |source| WasmError::Read { path: what.clone(), source };
            let size = tokio::fs::metadata(path).await.map_err(read_err)?.len();
            if size > MAX_MODULE_BYTES {
                return Err(WasmError::TooLarge { what, size, limit: MAX_MODULE_BYTES });
            }
            let bytes = tokio::fs::read(path).await.map_err(read_err)?;
            let digest = sha256_hex(&bytes);
            if let Some(expected) = sha256 {
                verify(&what, expected, &digest)?;
            }
            Ok((bytes, digest))
        }
        ModuleSource::Url { url, sha256 } => {
            let expected = sha256.to_ascii_lowercase();
            let kept = cache_dir.map(|d| d.join("sources").join(format!("{expected}.wasm")));
            if let Some(file) = &kept
                && let Ok(bytes) = tokio::fs::read(file).await
                && sha256_hex(&bytes) == expected
            {
                return Ok((bytes, expected));
            }
            let bytes = fetch(url).await?;
            let digest = sha256_hex(&bytes);
            verify(url, &expected, &digest)?;
            if let Some(file) = &kept
                && let Err(e) = keep(file, &bytes)
            {
                tracing::warn!(file = %file.display(), error = %e, "could not keep fetched module");
            }
            Ok((bytes, digest))
        }
    }
}

fn verify(what: &str, expected: &str, actual: &str) -> Result<(), WasmError> {
    if expected.eq_ignore_ascii_case(actual) {
        Ok(())
    } else {
        Err(WasmError::Digest {
            what: what.to_owned(),
            expected: expected.to_owned(),
            actual: actual.to_owned(),
        })
    }
}

fn keep(file: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = file.parent().ok_or_else(|| std::io::Error::other("no parent directory"))?;
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(file).map_err(|e| e.error)?;
    Ok(())
}

/// GETs `url` (http or https with the system's roots), following no redirects.
async fn fetch(url: &str) -> Result<Vec<u8>, WasmError> {
    let fail = |message: String| WasmError::Fetch { url: url.to_owned(), message };
    let uri: http::Uri = url.parse().map_err(|e| fail(format!("{e}")))?;
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()
        .map_err(|e| fail(format!("no TLS roots: {e}")))?
        .https_or_http()
        .enable_http1()
        .build();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build::<_, Empty<bytes::Bytes>>(https);
    #[allow(clippy::disallowed_methods, reason = "bounded by Limited")]
    let request = async {
        let resp = client.get(uri).await.map_err(|e| fail(format!("{e}")))?;
        if !resp.status().is_success() {
            return Err(fail(format!("status {}", resp.status())));
        }
        let body = Limited::new(resp.into_body(), MAX_MODULE_BYTES as usize)
            .collect()
            .await
            .map_err(|e| fail(format!("reading body: {e}")))?;
        Ok(body.to_bytes().to_vec())
    };
    tokio::time::timeout(FETCH_TIMEOUT, request).await.map_err(|_| fail("timed out".into()))?
}
