//! Capability policy for wasmcage: what a guest may touch, and the limits it runs under.
//!
//! A [`Policy`] grants nothing unless asked: [`Policy::default()`] is the empty grant. Grants
//! read like wasmtime's `WasiCtxBuilder`, one explicit call each ([`PolicyBuilder`]); named
//! [`Profile`]s are starting points to tighten; policies load from TOML files
//! ([`Policy::from_toml`]) whose mistakes are rejected with the key and the reason.
//! `wasmcage-core` applies a policy when it builds a guest's WASI context.

mod file;
mod limits;
mod net;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

pub use limits::Limits;
pub use net::{Cidr, NetDenial, NetRule, NetworkPolicy};

/// An error in a policy: the key (or flag) and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// A value is invalid or contradicts another.
    #[error("{key}: {reason}")]
    Invalid {
        /// Where: a TOML key such as `dirs[1].host`, or a flag such as `--dir`.
        key: String,
        /// What is wrong, and what to do.
        reason: String,
    },
    /// The policy file could not be read or parsed.
    #[error("cannot load the policy {path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
}

pub(crate) fn invalid(key: impl Into<String>, reason: impl Into<String>) -> PolicyError {
    PolicyError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

/// Whether a grant may be written to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// Read only.
    ReadOnly,
    /// Read and write.
    ReadWrite,
}

/// A host directory the guest sees at a guest path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirGrant {
    /// The host directory (absolute once validated).
    pub host: PathBuf,
    /// Where the guest sees it, an absolute guest path such as `/data`.
    pub guest: String,
    /// Read only or read-write.
    pub access: Access,
}

impl FromStr for DirGrant {
    type Err = String;

    /// `<HOST>[::<GUEST>][:ro]`: the guest path defaults to `/` and the host directory's name;
    /// access defaults to read-write.
    fn from_str(s: &str) -> Result<Self, String> {
        let (rest, access) = match s.strip_suffix(":ro") {
            Some(rest) => (rest, Access::ReadOnly),
            None => (s.strip_suffix(":rw").unwrap_or(s), Access::ReadWrite),
        };
        let (host, guest) = match rest.split_once("::") {
            Some((host, guest)) => (host, guest.to_owned()),
            None => {
                let name = Path::new(rest)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned());
                (rest, format!("/{}", name.unwrap_or_default()))
            }
        };
        if host.is_empty() {
            return Err(format!(
                "{s:?} names no host directory; write <HOST>[::<GUEST>][:ro]"
            ));
        }
        Ok(DirGrant {
            host: PathBuf::from(host),
            guest,
            access,
        })
    }
}

/// Where the guest's standard output or error goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// Captured up to the limit in [`Limits`].
    Capture,
    /// Discarded; the guest's writes succeed and go nowhere.
    Closed,
}

/// The guest's clocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clocks {
    /// The host's clocks.
    Real,
    /// Reproducible: wall time starts at the Unix epoch and both clocks advance 1 ms per read.
    Deterministic,
}

/// The guest's randomness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Randomness {
    /// The host's generator.
    Real,
    /// Reproducible bytes from this seed (never for secrets).
    Deterministic(u64),
}

/// What a guest may touch and the limits it runs under. See [`Policy::default`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Host directories, each at a guest path.
    pub dirs: Vec<DirGrant>,
    /// A fresh, empty, read-write temporary directory per execution at this guest path,
    /// deleted afterwards.
    pub scratch: Option<String>,
    /// Environment variables set to these values.
    pub env: BTreeMap<String, String>,
    /// Host environment variables passed through by name (absent ones stay absent).
    pub inherit_env: Vec<String>,
    /// Arguments after the program name, before the caller's.
    pub args: Vec<String>,
    /// Whether the guest reads the stdin the caller gives (`false`: stdin is closed).
    pub stdin: bool,
    /// Standard output.
    pub stdout: Output,
    /// Standard error.
    pub stderr: Output,
    /// Clocks.
    pub clocks: Clocks,
    /// Randomness.
    pub random: Randomness,
    /// Network destinations.
    pub network: NetworkPolicy,
    /// Resource limits.
    pub limits: Limits,
}

impl Default for Policy {
    /// Grants nothing: no directories and no scratch space, no environment variables, no
    /// arguments beyond those of the call, stdin as given by the caller, stdout and stderr
    /// captured up to the default limits, the host's clocks and randomness, no network
    /// destination at all, and [`Limits::default`].
    fn default() -> Self {
        Policy {
            dirs: Vec::new(),
            scratch: None,
            env: BTreeMap::new(),
            inherit_env: Vec::new(),
            args: Vec::new(),
            stdin: true,
            stdout: Output::Capture,
            stderr: Output::Capture,
            clocks: Clocks::Real,
            random: Randomness::Real,
            network: NetworkPolicy::default(),
            limits: Limits::default(),
        }
    }
}

/// A named starting point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// No filesystem, no network, small limits: 16 MiB memory, 100 million fuel, 1 s, 64 KiB of
    /// output per stream.
    Strict,
    /// A scratch directory at `/scratch`, no network, default limits.
    Standard,
    /// For trusted code: a scratch directory at `/scratch`, public HTTPS destinations
    /// (`*:443`; loopback, private and metadata addresses stay denied), 256 MiB memory, no fuel
    /// limit, 60 s.
    Permissive,
}

impl FromStr for Profile {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "strict" => Ok(Profile::Strict),
            "standard" => Ok(Profile::Standard),
            "permissive" => Ok(Profile::Permissive),
            other => Err(format!(
                "unknown profile {other:?}; choose strict, standard or permissive"
            )),
        }
    }
}

impl Profile {
    /// The profile's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Profile::Strict => "strict",
            Profile::Standard => "standard",
            Profile::Permissive => "permissive",
        }
    }
}

impl Policy {
    /// Starts building from nothing granted.
    pub fn builder() -> PolicyBuilder {
        PolicyBuilder {
            policy: Policy::default(),
            error: None,
        }
    }

    /// Continues building from this policy (to tighten or extend a profile or a file).
    pub fn to_builder(&self) -> PolicyBuilder {
        PolicyBuilder {
            policy: self.clone(),
            error: None,
        }
    }

    /// A named profile's policy.
    pub fn profile(profile: Profile) -> Policy {
        let defaults = Limits::default();
        match profile {
            Profile::Strict => Policy {
                limits: Limits {
                    memory_bytes: 16 << 20,
                    fuel: Some(100_000_000),
                    timeout: Duration::from_secs(1),
                    max_stdout_bytes: 64 << 10,
                    max_stderr_bytes: 64 << 10,
                    ..defaults
                },
                ..Policy::default()
            },
            Profile::Standard => Policy {
                scratch: Some("/scratch".into()),
                ..Policy::default()
            },
            Profile::Permissive => Policy {
                scratch: Some("/scratch".into()),
                network: NetworkPolicy {
                    allow: vec![NetRule::HostPort {
                        host: "*".into(),
                        port: Some(443),
                    }],
                },
                limits: Limits {
                    memory_bytes: 256 << 20,
                    fuel: None,
                    timeout: Duration::from_secs(60),
                    ..defaults
                },
                ..Policy::default()
            },
        }
    }

    /// Checks the policy: directories exist, guest paths are absolute and distinct,
    /// environment keys are well formed and not both set and inherited, limits are possible.
    pub fn validate(&self) -> Result<(), PolicyError> {
        let mut guests = BTreeMap::new();
        for (i, dir) in self.dirs.iter().enumerate() {
            let key = |f: &str| format!("dirs[{i}].{f}");
            let meta = std::fs::metadata(&dir.host).map_err(|e| {
                invalid(
                    key("host"),
                    format!("{} cannot be opened: {e}", dir.host.display()),
                )
            })?;
            if !meta.is_dir() {
                return Err(invalid(
                    key("host"),
                    format!("{} is not a directory", dir.host.display()),
                ));
            }
            check_guest_path(&key("guest"), &dir.guest)?;
            if let Some(previous) = guests.insert(dir.guest.clone(), i) {
                return Err(invalid(
                    key("guest"),
                    format!("{} is already granted by dirs[{previous}]", dir.guest),
                ));
            }
        }
        if let Some(scratch) = &self.scratch {
            check_guest_path("scratch", scratch)?;
            if guests.contains_key(scratch) {
                return Err(invalid(
                    "scratch",
                    format!("{scratch} is also granted as a directory"),
                ));
            }
        }
        for (i, a) in self.dirs.iter().enumerate() {
            for b in &self.dirs[i + 1..] {
                if a.host == b.host && a.access != b.access {
                    return Err(invalid(
                        format!("dirs[{i}].mode"),
                        format!(
                            "{} is granted both read-only and read-write; grant it once",
                            a.host.display()
                        ),
                    ));
                }
            }
        }
        for key in self.env.keys().chain(&self.inherit_env) {
            if key.is_empty() || key.contains('=') || key.contains('\0') {
                return Err(invalid(
                    "env",
                    format!("{key:?} is not a valid variable name"),
                ));
            }
        }
        if let Some(both) = self.inherit_env.iter().find(|k| self.env.contains_key(*k)) {
            return Err(invalid(
                "env.inherit",
                format!("{both} is both set and inherited; choose one"),
            ));
        }
        let l = &self.limits;
        if l.memory_bytes == 0 {
            return Err(invalid("limits.memory", "must be larger than zero"));
        }
        if l.memory_bytes > 4 << 30 {
            return Err(invalid(
                "limits.memory",
                "cannot exceed 4 GiB: a 32-bit guest cannot address more",
            ));
        }
        if l.timeout.is_zero() {
            return Err(invalid("limits.timeout", "must be longer than zero"));
        }
        if l.fuel == Some(0) {
            return Err(invalid(
                "limits.fuel",
                "must be larger than zero, or \"none\" for unmetered",
            ));
        }
        Ok(())
    }
}

fn check_guest_path(key: &str, path: &str) -> Result<(), PolicyError> {
    if !path.starts_with('/') {
        return Err(invalid(
            key,
            format!("{path:?} must be an absolute guest path such as /data"),
        ));
    }
    if path.split('/').any(|c| c == "..") {
        return Err(invalid(key, format!("{path:?} must not contain `..`")));
    }
    Ok(())
}

/// Builds a [`Policy`], one explicit grant per call.
#[derive(Debug, Clone)]
pub struct PolicyBuilder {
    policy: Policy,
    error: Option<PolicyError>,
}

impl PolicyBuilder {
    /// Grants a host directory at a guest path.
    pub fn dir(
        mut self,
        host: impl Into<PathBuf>,
        guest: impl Into<String>,
        access: Access,
    ) -> Self {
        self.policy.dirs.push(DirGrant {
            host: host.into(),
            guest: guest.into(),
            access,
        });
        self
    }

    /// Grants a fresh temporary directory per execution at `guest`.
    pub fn scratch(mut self, guest: impl Into<String>) -> Self {
        self.policy.scratch = Some(guest.into());
        self
    }

    /// Sets an environment variable.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.policy.env.insert(key.into(), value.into());
        self
    }

    /// Passes a host environment variable through by name.
    pub fn inherit_env(mut self, key: impl Into<String>) -> Self {
        self.policy.inherit_env.push(key.into());
        self
    }

    /// Adds an argument.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.policy.args.push(arg.into());
        self
    }

    /// Closes stdin.
    pub fn close_stdin(mut self) -> Self {
        self.policy.stdin = false;
        self
    }

    /// Where stdout goes.
    pub fn stdout(mut self, output: Output) -> Self {
        self.policy.stdout = output;
        self
    }

    /// Where stderr goes.
    pub fn stderr(mut self, output: Output) -> Self {
        self.policy.stderr = output;
        self
    }

    /// The guest's clocks.
    pub fn clocks(mut self, clocks: Clocks) -> Self {
        self.policy.clocks = clocks;
        self
    }

    /// The guest's randomness.
    pub fn random(mut self, random: Randomness) -> Self {
        self.policy.random = random;
        self
    }

    /// Allows a network destination (`HOST:PORT` or a CIDR range).
    pub fn allow_net(mut self, rule: &str) -> Self {
        match rule.parse() {
            Ok(rule) => self.policy.network.allow.push(rule),
            Err(reason) => {
                self.error.get_or_insert(invalid("network.allow", reason));
            }
        }
        self
    }

    /// Sets every resource limit.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.policy.limits = limits;
        self
    }

    /// Validates and returns the policy.
    pub fn build(self) -> Result<Policy, PolicyError> {
        if let Some(error) = self.error {
            return Err(error);
        }
        self.policy.validate()?;
        Ok(self.policy)
    }
}

pub use wasmcage_events::units::{parse_duration, parse_size};
