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

pub use limits::{Limits, OnMemoryLimit};
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
    /// The host directory (canonical once built or loaded from a file).
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
                // `.`, `..` and `/` have no name; granting one at `/` unasked would surprise.
                let name = Path::new(rest).file_name().ok_or_else(|| {
                    format!("{s:?} has no directory name to use as the guest path; write {rest}::<GUEST>")
                })?;
                (rest, format!("/{}", name.to_string_lossy()))
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

/// One environment grant, as the command line writes it: `K=V` sets a variable, a bare `K`
/// passes the host's variable through by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvGrant {
    /// The variable with this value.
    Set {
        /// The name.
        key: String,
        /// The value.
        value: String,
    },
    /// The host's variable of this name, read when the policy is applied (absent if the host
    /// has none).
    Inherit(String),
}

impl FromStr for EnvGrant {
    type Err = String;

    /// `K=V` or `K`; the value may itself contain `=`.
    fn from_str(s: &str) -> Result<Self, String> {
        let grant = match s.split_once('=') {
            Some((key, value)) => EnvGrant::Set {
                key: key.to_owned(),
                value: value.to_owned(),
            },
            None => EnvGrant::Inherit(s.to_owned()),
        };
        let key = match &grant {
            EnvGrant::Set { key, .. } | EnvGrant::Inherit(key) => key,
        };
        if key.is_empty() || key.contains('\0') {
            return Err(format!(
                "{s:?} names no valid variable; write KEY=VALUE, or KEY to pass the host's through"
            ));
        }
        Ok(grant)
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
        let mut hosts: BTreeMap<PathBuf, (usize, Access)> = BTreeMap::new();
        for (i, dir) in self.dirs.iter().enumerate() {
            let key = |f: &str| format!("dirs[{i}].{f}");
            let host = open_host_dir(&dir.host).map_err(|reason| invalid(key("host"), reason))?;
            check_guest_path(&key("guest"), &dir.guest)?;
            if let Some(previous) = guests.insert(normal_guest_path(&dir.guest), i) {
                return Err(invalid(
                    key("guest"),
                    format!("{} is already granted by dirs[{previous}]", dir.guest),
                ));
            }
            // Compared in canonical form, so that `./data` and its absolute path are one.
            match hosts.get(&host) {
                Some(&(previous, access)) if access != dir.access => {
                    return Err(invalid(
                        key("mode"),
                        format!(
                            "{} is granted both read-only and read-write (also by \
                             dirs[{previous}]); grant it once",
                            dir.host.display()
                        ),
                    ));
                }
                _ => {
                    hosts.insert(host, (i, dir.access));
                }
            }
        }
        if let Some(scratch) = &self.scratch {
            check_guest_path("scratch", scratch)?;
            if let Some(i) = guests.get(&normal_guest_path(scratch)) {
                return Err(invalid(
                    "scratch",
                    format!("{scratch} is also granted as a directory by dirs[{i}]"),
                ));
            }
        }
        // WASI hands strings to the guest NUL-terminated: an inner NUL would cut a value short.
        let nul = |key: String, what: &str, text: &str| {
            if text.contains('\0') {
                Err(invalid(key, format!("{what} {text:?} contains a NUL byte")))
            } else {
                Ok(())
            }
        };
        for (i, arg) in self.args.iter().enumerate() {
            nul(format!("args[{i}]"), "the argument", arg)?;
        }
        let bad_name = |key: &str| key.is_empty() || key.contains('=') || key.contains('\0');
        for (key, value) in &self.env {
            if bad_name(key) {
                return Err(invalid(
                    "env.set",
                    format!(
                        "{key:?} is not a valid variable name: it must be non-empty, without `=` or NUL"
                    ),
                ));
            }
            nul(format!("env.set.{key}"), "the value", value)?;
        }
        for (i, key) in self.inherit_env.iter().enumerate() {
            if bad_name(key) {
                return Err(invalid(
                    format!("env.inherit[{i}]"),
                    format!(
                        "{key:?} is not a valid variable name: it must be non-empty, without `=` or NUL"
                    ),
                ));
            }
            if self.env.contains_key(key) {
                return Err(invalid(
                    format!("env.inherit[{i}]"),
                    format!("{key} is both set and inherited; choose one"),
                ));
            }
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

/// Opens a granted host directory (as wasmtime-wasi will, to prove that it can) and returns
/// its canonical path, or why it cannot be granted.
pub(crate) fn open_host_dir(host: &Path) -> Result<PathBuf, String> {
    use std::io::ErrorKind;
    let why = |e: std::io::Error| match e.kind() {
        ErrorKind::NotFound => format!("{} cannot be opened: it does not exist", host.display()),
        ErrorKind::NotADirectory => format!("{} is not a directory", host.display()),
        ErrorKind::PermissionDenied => {
            format!("{} cannot be opened: permission denied", host.display())
        }
        _ => format!("{} cannot be opened: {e}", host.display()),
    };
    std::fs::read_dir(host).map_err(why)?;
    host.canonicalize().map_err(why)
}

/// A guest path with empty and `.` components dropped, so that `/data/` and `/data` compare
/// equal.
fn normal_guest_path(path: &str) -> String {
    let parts: Vec<&str> = path
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    format!("/{}", parts.join("/"))
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
    if path.contains('\0') {
        return Err(invalid(key, format!("{path:?} contains a NUL byte")));
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

    /// Applies an environment grant parsed from the command line (`K=V` or `K`).
    pub fn env_grant(self, grant: EnvGrant) -> Self {
        match grant {
            EnvGrant::Set { key, value } => self.env(key, value),
            EnvGrant::Inherit(key) => self.inherit_env(key),
        }
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

    /// Validates and returns the policy, with every granted host directory in canonical
    /// (absolute) form, so that it does not depend on the working directory later.
    pub fn build(mut self) -> Result<Policy, PolicyError> {
        if let Some(error) = self.error {
            return Err(error);
        }
        self.policy.validate()?;
        for (i, dir) in self.policy.dirs.iter_mut().enumerate() {
            dir.host =
                open_host_dir(&dir.host).map_err(|e| invalid(format!("dirs[{i}].host"), e))?;
        }
        Ok(self.policy)
    }
}

/// Sizes (`64MiB`, `512KiB`, `1048576`) and durations (`500ms`, `2s`), read the same way by
/// policy files, flags and the server's configuration.
pub use wasmcage_events::units::{parse_duration, parse_size};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_policy_grants_nothing() {
        let p = Policy::default();
        assert!(p.dirs.is_empty() && p.scratch.is_none());
        assert!(p.env.is_empty() && p.inherit_env.is_empty() && p.args.is_empty());
        assert!(p.network.allow.is_empty());
        assert_eq!(
            (p.stdin, p.stdout, p.stderr),
            (true, Output::Capture, Output::Capture)
        );
        assert_eq!((p.clocks, p.random), (Clocks::Real, Randomness::Real));
        assert_eq!(p.limits, Limits::default());
        assert_eq!(Policy::builder().build(), Ok(Policy::default()));
        // No destination at all, public or not.
        for addr in ["93.184.216.34:443", "127.0.0.1:80"] {
            assert!(
                p.network.check_addr(addr.parse().unwrap()).is_err(),
                "{addr}"
            );
        }
        assert!(p.network.check_host("example.com", 443).is_err());
    }

    #[test]
    fn profiles() {
        let check = |name: &str, scratch: Option<&str>, https: bool, limits: Limits| {
            let profile: Profile = name.parse().unwrap();
            assert_eq!(profile.as_str(), name);
            let p = Policy::profile(profile);
            assert_eq!(p.validate(), Ok(()), "{name}");
            assert_eq!(p.scratch.as_deref(), scratch, "{name}");
            assert!(p.dirs.is_empty() && p.env.is_empty() && p.inherit_env.is_empty());
            assert_eq!(
                p.network.check_host("example.com", 443).is_ok(),
                https,
                "{name}"
            );
            assert!(p.network.check_host("example.com", 80).is_err(), "{name}");
            // Not even the most permissive profile opens loopback or metadata addresses.
            for special in ["127.0.0.1:443", "169.254.169.254:443", "10.0.0.1:443"] {
                assert!(p.network.check_addr(special.parse().unwrap()).is_err());
            }
            assert_eq!(p.limits, limits, "{name}");
        };
        let defaults = Limits::default();
        check(
            "strict",
            None,
            false,
            Limits {
                memory_bytes: 16 << 20,
                fuel: Some(100_000_000),
                timeout: Duration::from_secs(1),
                max_stdout_bytes: 64 << 10,
                max_stderr_bytes: 64 << 10,
                ..defaults.clone()
            },
        );
        check("standard", Some("/scratch"), false, defaults.clone());
        check(
            "permissive",
            Some("/scratch"),
            true,
            Limits {
                memory_bytes: 256 << 20,
                fuel: None,
                timeout: Duration::from_secs(60),
                ..defaults
            },
        );
        assert_eq!(
            "lax".parse::<Profile>(),
            Err("unknown profile \"lax\"; choose strict, standard or permissive".into())
        );
    }

    #[test]
    fn the_builder_reads_like_wasi_ctx_builder() {
        let dir = tempfile::tempdir().unwrap();
        let policy = Policy::builder()
            .dir(dir.path(), "/data", Access::ReadOnly)
            .env("MODE", "test")
            .inherit_env("TZ")
            .env_grant("A=b=c".parse().unwrap())
            .env_grant("HOME".parse().unwrap())
            .arg("--verbose")
            .allow_net("api.example.com:443")
            .build()
            .unwrap();
        assert_eq!(policy.dirs[0].host, dir.path().canonicalize().unwrap());
        assert_eq!(policy.env["A"], "b=c");
        assert_eq!(policy.inherit_env, ["TZ", "HOME"]);
        assert_eq!(policy.args, ["--verbose"]);
        // A profile extended: its grants stay, the new ones are added.
        let extended = Policy::profile(Profile::Standard)
            .to_builder()
            .allow_net("10.0.0.0/8")
            .build()
            .unwrap();
        assert_eq!(extended.scratch.as_deref(), Some("/scratch"));
        assert!(
            extended
                .network
                .check_addr("10.1.2.3:80".parse().unwrap())
                .is_ok()
        );
    }

    #[test]
    fn the_builder_refuses_what_cannot_be_granted() {
        let dir = tempfile::tempdir().unwrap();
        let check = |builder: PolicyBuilder, expected: &str| {
            let got = builder.build().map_err(|e| e.to_string());
            assert_eq!(got.as_ref().map_err(String::as_str), Err(expected));
        };
        check(
            Policy::builder().allow_net("nope"),
            "network.allow: \"nope\" is neither HOST:PORT nor a CIDR range",
        );
        check(
            Policy::builder().dir(dir.path(), "data", Access::ReadWrite),
            "dirs[0].guest: \"data\" must be an absolute guest path such as /data",
        );
        // The same directory, spelled two ways.
        check(
            Policy::builder()
                .dir(dir.path(), "/a", Access::ReadWrite)
                .dir(dir.path().join("."), "/b", Access::ReadOnly),
            &format!(
                "dirs[1].mode: {}/. is granted both read-only and read-write (also by \
                 dirs[0]); grant it once",
                dir.path().display()
            ),
        );
        check(
            Policy::builder().dir(dir.path().join("nope"), "/a", Access::ReadWrite),
            &format!(
                "dirs[0].host: {}/nope cannot be opened: it does not exist",
                dir.path().display()
            ),
        );
        check(
            Policy::builder()
                .scratch("/d")
                .dir(dir.path(), "/d/", Access::ReadOnly),
            "scratch: /d is also granted as a directory by dirs[0]",
        );
        check(
            Policy::builder().env("K", "1").inherit_env("K"),
            "env.inherit[0]: K is both set and inherited; choose one",
        );
        check(
            Policy::builder().env("", "1"),
            "env.set: \"\" is not a valid variable name: it must be non-empty, without `=` or NUL",
        );
        check(
            Policy::builder().arg("a\0b"),
            "args[0]: the argument \"a\\0b\" contains a NUL byte",
        );
        check(
            Policy::builder().limits(Limits {
                fuel: Some(0),
                ..Limits::default()
            }),
            "limits.fuel: must be larger than zero, or \"none\" for unmetered",
        );
    }

    #[test]
    fn command_line_directory_grants() {
        let check = |s: &str, expected: Result<(&str, &str, Access), &str>| {
            let got = s.parse::<DirGrant>();
            let expected = expected
                .map(|(host, guest, access)| DirGrant {
                    host: host.into(),
                    guest: guest.into(),
                    access,
                })
                .map_err(str::to_owned);
            assert_eq!(got, expected, "{s}");
        };
        check("./data", Ok(("./data", "/data", Access::ReadWrite)));
        check("data/", Ok(("data/", "/data", Access::ReadWrite)));
        check("/srv/in:ro", Ok(("/srv/in", "/in", Access::ReadOnly)));
        check(
            "/srv/in::/input:ro",
            Ok(("/srv/in", "/input", Access::ReadOnly)),
        );
        check(
            "/srv/out::/output",
            Ok(("/srv/out", "/output", Access::ReadWrite)),
        );
        check(
            "/srv/out::/output:rw",
            Ok(("/srv/out", "/output", Access::ReadWrite)),
        );
        check(
            "::/x",
            Err("\"::/x\" names no host directory; write <HOST>[::<GUEST>][:ro]"),
        );
        check(
            ".",
            Err("\".\" has no directory name to use as the guest path; write .::<GUEST>"),
        );
        check(
            "/:ro",
            Err("\"/:ro\" has no directory name to use as the guest path; write /::<GUEST>"),
        );
    }

    #[test]
    fn command_line_environment_grants() {
        let set = |key: &str, value: &str| EnvGrant::Set {
            key: key.into(),
            value: value.into(),
        };
        let check = |s: &str, expected: Option<EnvGrant>| {
            assert_eq!(s.parse::<EnvGrant>().ok(), expected, "{s}");
        };
        check("LANG=C.UTF-8", Some(set("LANG", "C.UTF-8")));
        check("EMPTY=", Some(set("EMPTY", "")));
        check("OPTS=a=b", Some(set("OPTS", "a=b")));
        check("TZ", Some(EnvGrant::Inherit("TZ".into())));
        check("", None);
        check("=value", None);
    }
}
