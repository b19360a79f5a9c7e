//! The service's configuration: a TOML file in which every value has a default, so that no
//! file at all starts a loopback service with the `standard` profile.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use wasmcage::core::policy::{parse_duration, parse_size};
use wasmcage::{Limits, Profile};

use crate::ServerError;

/// The service's configuration, with every value resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// Where the API listens (default `127.0.0.1:8000`).
    pub listen: SocketAddr,
    /// Where uploaded modules and compiled code are kept (default: the user's cache
    /// directory, `wasmcage/server`).
    pub data_dir: PathBuf,
    /// The profile executions start from (default `standard`).
    pub profile: Profile,
    /// The most any request may ask for; requests ask for less or get these.
    pub max_limits: Limits,
    /// API keys; none means the service refuses to listen beyond loopback.
    pub api_keys: Vec<String>,
    /// The largest request body, in bytes (default 16 MiB).
    pub max_body_bytes: usize,
    /// The longest a request may take (default 60 s).
    pub request_timeout: Duration,
    /// Environment variables a `run` request may set (default: none).
    pub allowed_env: Vec<String>,
    /// Requests per second allowed per API key (anonymous callers share one bucket);
    /// `None` (the default) sets no rate limit.
    pub rate_limit: Option<RateLimit>,
}

/// A token bucket: `per_second` sustained, bursts of up to `burst`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Sustained requests per second.
    pub per_second: f64,
    /// The most requests at once.
    pub burst: u32,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8000)),
            data_dir: default_data_dir(),
            profile: Profile::Standard,
            max_limits: Limits {
                memory_bytes: 256 << 20,
                fuel: Some(10_000_000_000),
                timeout: Duration::from_secs(30),
                max_stdout_bytes: 4 << 20,
                max_stderr_bytes: 4 << 20,
                ..Limits::default()
            },
            api_keys: Vec::new(),
            max_body_bytes: 16 << 20,
            request_timeout: Duration::from_secs(60),
            allowed_env: Vec::new(),
            rate_limit: None,
        }
    }
}

fn default_data_dir() -> PathBuf {
    let env = |key: &str| {
        std::env::var_os(key)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    env("XDG_CACHE_HOME")
        .or_else(|| env("HOME").map(|h| h.join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
        .join("wasmcage/server")
}

/// The file format: every key optional.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct File {
    listen: Option<String>,
    data_dir: Option<PathBuf>,
    profile: Option<String>,
    api_keys: Option<Vec<String>>,
    max_body: Option<String>,
    request_timeout: Option<String>,
    allowed_env: Option<Vec<String>>,
    rate_limit: Option<RateLimit>,
    max_limits: Option<FileLimits>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct FileLimits {
    memory: Option<String>,
    fuel: Option<u64>,
    timeout: Option<String>,
    max_output: Option<String>,
}

fn bad(key: &str, reason: impl std::fmt::Display) -> ServerError {
    ServerError::Config(format!("{key}: {reason}"))
}

impl ServerConfig {
    /// Parses a configuration file's text; missing keys keep their defaults. API keys may
    /// also come from `WASMCAGE_API_KEYS` (comma-separated), added to the file's.
    pub fn from_toml(text: &str) -> Result<Self, ServerError> {
        let file: File =
            toml::from_str(text).map_err(|e| ServerError::Config(e.message().to_owned()))?;
        let mut c = ServerConfig::default();
        if let Some(listen) = file.listen {
            c.listen = listen
                .parse()
                .map_err(|e| bad("listen", format!("{listen:?}: {e}")))?;
        }
        if let Some(dir) = file.data_dir {
            c.data_dir = dir;
        }
        if let Some(profile) = file.profile {
            c.profile = profile.parse().map_err(|e| bad("profile", e))?;
        }
        if let Some(keys) = file.api_keys {
            c.api_keys = keys;
        }
        if let Some(body) = file.max_body {
            c.max_body_bytes = parse_size(&body).map_err(|e| bad("max_body", e))? as usize;
        }
        if let Some(t) = file.request_timeout {
            c.request_timeout = parse_duration(&t).map_err(|e| bad("request_timeout", e))?;
        }
        if let Some(env) = file.allowed_env {
            c.allowed_env = env;
        }
        if let Some(rate) = file.rate_limit {
            if rate.per_second.is_nan() || rate.per_second <= 0.0 || rate.burst == 0 {
                return Err(bad(
                    "rate_limit",
                    "per_second and burst must be larger than zero",
                ));
            }
            c.rate_limit = Some(rate);
        }
        if let Some(l) = file.max_limits {
            if let Some(m) = l.memory {
                c.max_limits.memory_bytes =
                    parse_size(&m).map_err(|e| bad("max_limits.memory", e))?;
            }
            if let Some(f) = l.fuel {
                c.max_limits.fuel = Some(f);
            }
            if let Some(t) = l.timeout {
                c.max_limits.timeout =
                    parse_duration(&t).map_err(|e| bad("max_limits.timeout", e))?;
            }
            if let Some(o) = l.max_output {
                let o = parse_size(&o).map_err(|e| bad("max_limits.max_output", e))?;
                c.max_limits.max_stdout_bytes = o;
                c.max_limits.max_stderr_bytes = o;
            }
        }
        c.add_env_keys();
        Ok(c)
    }

    /// Reads a configuration file, or the defaults when `path` is `None`.
    pub fn load(path: Option<&Path>) -> Result<Self, ServerError> {
        match path {
            None => {
                let mut c = ServerConfig::default();
                c.add_env_keys();
                Ok(c)
            }
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| {
                    ServerError::Config(format!("cannot read {}: {e}", p.display()))
                })?;
                Self::from_toml(&text)
            }
        }
    }

    fn add_env_keys(&mut self) {
        if let Ok(keys) = std::env::var("WASMCAGE_API_KEYS") {
            self.api_keys.extend(
                keys.split(',')
                    .map(str::trim)
                    .filter(|k| !k.is_empty())
                    .map(String::from),
            );
        }
    }

    /// The effective configuration in the file format (API keys shown only as a count).
    pub fn to_toml(&self) -> String {
        let file = File {
            listen: Some(self.listen.to_string()),
            data_dir: Some(self.data_dir.clone()),
            profile: Some(self.profile.as_str().to_owned()),
            api_keys: Some(
                self.api_keys
                    .iter()
                    .map(|_| "<redacted>".to_owned())
                    .collect(),
            ),
            max_body: Some(self.max_body_bytes.to_string()),
            request_timeout: Some(format!("{}ms", self.request_timeout.as_millis())),
            allowed_env: Some(self.allowed_env.clone()),
            rate_limit: self.rate_limit,
            max_limits: Some(FileLimits {
                memory: Some(self.max_limits.memory_bytes.to_string()),
                fuel: self.max_limits.fuel,
                timeout: Some(format!("{}ms", self.max_limits.timeout.as_millis())),
                max_output: Some(self.max_limits.max_stdout_bytes.to_string()),
            }),
        };
        toml::to_string(&file).expect("the configuration serialises")
    }
}
