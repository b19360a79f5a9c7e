//! The policy file format (TOML) and the effective policy printed back in it.
//!
//! ```toml
//! profile = "standard"     # optional starting point; the rest of the file extends it
//! args = ["--verbose"]
//! scratch = "/tmp"         # a fresh temporary directory per execution
//!
//! [limits]
//! memory = "64MiB"         # sizes: B, KiB, MiB, GiB (or KB, MB, GB), or a number of bytes
//! fuel = 1000000000        # or "none"
//! timeout = "2s"           # us, ms, s, m
//! max_output = "1MiB"      # both streams; or max_stdout / max_stderr
//! table_elements = 10000
//! instances = 1            # also tables, memories: how many a store may create
//!
//! [[dirs]]
//! host = "./data"          # relative to the policy file
//! guest = "/data"
//! mode = "ro"              # "ro" or "rw"
//!
//! [env]
//! set = { LANG = "C.UTF-8" }
//! inherit = ["TZ"]
//!
//! [network]
//! allow = ["api.example.com:443", "10.1.2.0/24"]
//!
//! [stdio]
//! stdin = "given"          # or "closed"
//! stdout = "capture"       # or "closed"
//! stderr = "capture"
//!
//! [clocks]
//! mode = "real"            # or "deterministic"
//!
//! [random]
//! mode = "deterministic"   # or "real"
//! seed = 42
//! ```
//!
//! Every key is optional. A file without `profile` extends the policy it is loaded over
//! ([`Policy::from_toml_over`]; nothing, for [`Policy::from_toml`]): `args`, `dirs`,
//! `env` and `network.allow` add to it, and the other keys replace its values. Mistakes are
//! rejected with the key (and its line, when toml found the mistake) and the reason:
//!
//! ```text
//! limits.timeout (line 9): invalid type: integer `2`, expected a duration such as "500ms" or "2s"
//! limits (line 9): unknown key `memroy`, expected one of `memory`, `fuel`, ...
//! dirs[1].host: /nope cannot be opened: it does not exist
//! network.allow[0]: "10.0.0.0/33" is not a valid CIDR range
//! ```
//!
//! [`Policy::to_toml`] prints a policy in this format, every key spelled out; timeouts keep
//! microseconds (finer parts are dropped).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, Unexpected, Visitor};

use crate::{
    Access, Clocks, DirGrant, Output, Policy, PolicyError, Profile, Randomness, invalid,
    open_host_dir, parse_duration, parse_size,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    profile: Option<String>,
    #[serde(default)]
    args: Vec<String>,
    scratch: Option<String>,
    limits: Option<FileLimits>,
    #[serde(default)]
    dirs: Vec<FileDir>,
    env: Option<FileEnv>,
    network: Option<FileNetwork>,
    stdio: Option<FileStdio>,
    clocks: Option<FileMode>,
    random: Option<FileRandom>,
}

/// A number, or a string to parse later. Deserialized by hand (not `#[serde(untagged)]`) so
/// that a wrong value is reported as what the key expects, not as "no variant matched".
enum Amount {
    Number(u64),
    Text(String),
}

struct AmountVisitor {
    expecting: &'static str,
    numbers: bool,
}

impl Visitor<'_> for AmountVisitor {
    type Value = Amount;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Amount, E> {
        if self.numbers {
            Ok(Amount::Number(v))
        } else {
            Err(E::invalid_type(Unexpected::Unsigned(v), &self))
        }
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Amount, E> {
        match u64::try_from(v) {
            Ok(v) => self.visit_u64(v),
            Err(_) => Err(E::invalid_value(Unexpected::Signed(v), &self)),
        }
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Amount, E> {
        Ok(Amount::Text(v.to_owned()))
    }
}

fn amount<'de, D: Deserializer<'de>>(
    d: D,
    expecting: &'static str,
    numbers: bool,
) -> Result<Amount, D::Error> {
    d.deserialize_any(AmountVisitor { expecting, numbers })
}

/// `limits.memory` and the output limits.
struct Size(Amount);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        amount(d, "a size such as \"64MiB\" or a number of bytes", true).map(Size)
    }
}

/// `limits.fuel`.
struct Fuel(Amount);

impl<'de> Deserialize<'de> for Fuel {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        amount(d, "a number of fuel units or \"none\"", true).map(Fuel)
    }
}

/// `limits.timeout`.
struct Timeout(String);

impl<'de> Deserialize<'de> for Timeout {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match amount(d, "a duration such as \"500ms\" or \"2s\"", false)? {
            Amount::Text(t) => Ok(Timeout(t)),
            Amount::Number(_) => unreachable!("numbers are refused by the visitor"),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileLimits {
    memory: Option<Size>,
    fuel: Option<Fuel>,
    timeout: Option<Timeout>,
    max_output: Option<Size>,
    max_stdout: Option<Size>,
    max_stderr: Option<Size>,
    table_elements: Option<u64>,
    instances: Option<u32>,
    tables: Option<u32>,
    memories: Option<u32>,
    disk: Option<Size>,
    on_memory_limit: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDir {
    host: String,
    guest: Option<String>,
    mode: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileEnv {
    #[serde(default)]
    set: BTreeMap<String, String>,
    #[serde(default)]
    inherit: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileNetwork {
    #[serde(default)]
    allow: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileStdio {
    stdin: Option<String>,
    stdout: Option<String>,
    stderr: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileMode {
    mode: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRandom {
    mode: String,
    seed: Option<u64>,
}

fn size(key: &str, Size(amount): Size) -> Result<u64, PolicyError> {
    match amount {
        Amount::Number(n) => Ok(n),
        Amount::Text(t) => parse_size(&t).map_err(|e| invalid(key, e)),
    }
}

fn output(key: &str, text: &str) -> Result<Output, PolicyError> {
    match text {
        "capture" => Ok(Output::Capture),
        "closed" => Ok(Output::Closed),
        other => Err(invalid(
            key,
            format!("{other:?} is not an output; use \"capture\" or \"closed\""),
        )),
    }
}

/// A toml error as the key (with its line) and the reason. The key is read from the text at
/// the error's position: the innermost table header above it (`[limits]`, the n-th
/// `[[dirs]]`) and the key on its line.
fn toml_error(text: &str, e: &toml::de::Error) -> PolicyError {
    let message = e.message().replacen("unknown field", "unknown key", 1);
    let Some(span) = e.span() else {
        return invalid("policy", message);
    };
    let at = span.start.min(text.len());
    let line = text[..at].matches('\n').count() + 1;
    let mut table = String::new();
    let mut arrays: BTreeMap<String, usize> = BTreeMap::new();
    let mut key = None;
    for (n, l) in text.lines().take(line).enumerate() {
        let l = l.trim_start();
        let header = |open: &str, close: &str| {
            l.strip_prefix(open)
                .and_then(|rest| rest.split_once(close))
                .map(|(name, _)| name.trim().to_owned())
        };
        if let Some(name) = header("[[", "]]") {
            let count = arrays.entry(name.clone()).or_default();
            table = format!("{name}[{count}]");
            *count += 1;
        } else if let Some(name) = header("[", "]") {
            table = name;
        } else if n + 1 == line && !l.starts_with('#') {
            key = l
                .split_once('=')
                .map(|(k, _)| k.trim().trim_matches('"').to_owned())
                .filter(|k| !k.is_empty());
        }
    }
    // An unknown key is named by the message; the others are named by the path.
    let path = match key {
        Some(key) if !message.starts_with("unknown key") => {
            if table.is_empty() {
                key
            } else {
                format!("{table}.{key}")
            }
        }
        _ => table,
    };
    let key = if path.is_empty() {
        format!("line {line}")
    } else {
        format!("{path} (line {line})")
    };
    invalid(key, message)
}

/// A size in the largest binary unit that divides it, or a number of bytes.
fn size_text(bytes: u64) -> String {
    for (unit, shift) in [("GiB", 30), ("MiB", 20), ("KiB", 10)] {
        if bytes != 0 && bytes.is_multiple_of(1 << shift) {
            return q(&format!("{}{unit}", bytes >> shift));
        }
    }
    bytes.to_string()
}

/// A duration in the largest unit that divides it, down to microseconds.
fn duration_text(d: Duration) -> String {
    let us = d.as_micros();
    for (unit, per) in [("m", 60_000_000), ("s", 1_000_000), ("ms", 1_000)] {
        if us != 0 && us.is_multiple_of(per) {
            return format!("{}{unit}", us / per);
        }
    }
    format!("{us}us")
}

/// A TOML string.
fn q(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

impl Policy {
    /// Parses a policy file; relative host paths resolve against `base_dir`. The result is
    /// validated.
    pub fn from_toml(text: &str, base_dir: &Path) -> Result<Policy, PolicyError> {
        Policy::from_toml_over(Policy::default(), text, base_dir)
    }

    /// Like [`Policy::from_toml`], but the file extends `base` (a profile chosen elsewhere)
    /// unless it names a `profile` of its own, which then replaces `base`.
    pub fn from_toml_over(
        base: Policy,
        text: &str,
        base_dir: &Path,
    ) -> Result<Policy, PolicyError> {
        let file: File = toml::from_str(text).map_err(|e| toml_error(text, &e))?;
        let mut policy = match &file.profile {
            None => base,
            Some(name) => {
                Policy::profile(name.parse::<Profile>().map_err(|e| invalid("profile", e))?)
            }
        };
        policy.args.extend(file.args);
        if let Some(scratch) = file.scratch {
            policy.scratch = Some(scratch);
        }
        if let Some(l) = file.limits {
            let limits = &mut policy.limits;
            if let Some(m) = l.memory {
                limits.memory_bytes = size("limits.memory", m)?;
            }
            if let Some(Fuel(fuel)) = l.fuel {
                limits.fuel = match fuel {
                    Amount::Number(n) => Some(n),
                    Amount::Text(t) if t == "none" => None,
                    Amount::Text(t) => Some(t.replace('_', "").parse().map_err(|_| {
                        invalid("limits.fuel", format!("{t:?} is not a number or \"none\""))
                    })?),
                };
            }
            if let Some(Timeout(t)) = l.timeout {
                limits.timeout = parse_duration(&t).map_err(|e| invalid("limits.timeout", e))?;
            }
            if let Some(both) = l.max_output {
                let both = size("limits.max_output", both)?;
                limits.max_stdout_bytes = both;
                limits.max_stderr_bytes = both;
            }
            if let Some(out) = l.max_stdout {
                limits.max_stdout_bytes = size("limits.max_stdout", out)?;
            }
            if let Some(err) = l.max_stderr {
                limits.max_stderr_bytes = size("limits.max_stderr", err)?;
            }
            if let Some(t) = l.table_elements {
                limits.table_elements = t;
            }
            if let Some(n) = l.instances {
                limits.instances = n;
            }
            if let Some(n) = l.tables {
                limits.tables = n;
            }
            if let Some(n) = l.memories {
                limits.memories = n;
            }
            if let Some(action) = l.on_memory_limit {
                limits.on_memory_limit = action
                    .parse()
                    .map_err(|e| invalid("limits.on_memory_limit", e))?;
            }
            if let Some(d) = l.disk {
                limits.disk_bytes = match d {
                    Size(Amount::Text(t)) if t == "none" => None,
                    d => Some(size("limits.disk", d)?),
                };
            }
        }
        let first = policy.dirs.len();
        for (i, d) in file.dirs.into_iter().enumerate() {
            let key = |f: &str| format!("dirs[{}].{f}", first + i);
            let access = match d.mode.as_deref() {
                None | Some("rw") => Access::ReadWrite,
                Some("ro") => Access::ReadOnly,
                Some(other) => {
                    return Err(invalid(
                        key("mode"),
                        format!("{other:?} is not a mode; use \"ro\" or \"rw\""),
                    ));
                }
            };
            let host =
                open_host_dir(&base_dir.join(&d.host)).map_err(|e| invalid(key("host"), e))?;
            let guest = match d.guest {
                Some(g) => g,
                None => format!(
                    "/{}",
                    host.file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default()
                ),
            };
            policy.dirs.push(DirGrant {
                host,
                guest,
                access,
            });
        }
        if let Some(env) = file.env {
            policy.env.extend(env.set);
            policy.inherit_env.extend(env.inherit);
        }
        if let Some(net) = file.network {
            for (i, rule) in net.allow.iter().enumerate() {
                policy.network.allow.push(
                    rule.parse()
                        .map_err(|e| invalid(format!("network.allow[{i}]"), e))?,
                );
            }
        }
        if let Some(stdio) = file.stdio {
            if let Some(stdin) = stdio.stdin {
                policy.stdin = match stdin.as_str() {
                    "given" => true,
                    "closed" => false,
                    other => {
                        return Err(invalid(
                            "stdio.stdin",
                            format!("{other:?} is not a stdin; use \"given\" or \"closed\""),
                        ));
                    }
                };
            }
            if let Some(o) = stdio.stdout {
                policy.stdout = output("stdio.stdout", &o)?;
            }
            if let Some(e) = stdio.stderr {
                policy.stderr = output("stdio.stderr", &e)?;
            }
        }
        if let Some(clocks) = file.clocks {
            policy.clocks = match clocks.mode.as_str() {
                "real" => Clocks::Real,
                "deterministic" => Clocks::Deterministic,
                other => {
                    return Err(invalid(
                        "clocks.mode",
                        format!("{other:?} is not a mode; use \"real\" or \"deterministic\""),
                    ));
                }
            };
        }
        if let Some(random) = file.random {
            policy.random = match (random.mode.as_str(), random.seed) {
                ("real", None) => Randomness::Real,
                ("real", Some(_)) => {
                    return Err(invalid("random.seed", "a seed contradicts mode \"real\""));
                }
                ("deterministic", seed) => Randomness::Deterministic(seed.unwrap_or(0)),
                (other, _) => {
                    return Err(invalid(
                        "random.mode",
                        format!("{other:?} is not a mode; use \"real\" or \"deterministic\""),
                    ));
                }
            };
        }
        policy.validate()?;
        Ok(policy)
    }

    /// Reads and parses a policy file.
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        Policy::load_over(Policy::default(), path)
    }

    /// Reads a policy file that extends `base`; see [`Policy::from_toml_over`].
    pub fn load_over(base: Policy, path: &Path) -> Result<Policy, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|e| PolicyError::File {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let dir = path.parent().unwrap_or(Path::new("."));
        Policy::from_toml_over(base, &text, dir)
    }

    /// The policy in the file format; [`Policy::from_toml`] reads it back to an equal policy.
    pub fn to_toml(&self) -> String {
        let list = |items: Vec<String>| {
            format!(
                "[{}]",
                items.iter().map(|s| q(s)).collect::<Vec<_>>().join(", ")
            )
        };
        let mut out = String::new();
        let _ = writeln!(out, "args = {}", list(self.args.clone()));
        if let Some(scratch) = &self.scratch {
            let _ = writeln!(out, "scratch = {}", q(scratch));
        }
        let l = &self.limits;
        let _ = writeln!(out, "\n[limits]\nmemory = {}", size_text(l.memory_bytes));
        let _ = writeln!(
            out,
            "fuel = {}",
            l.fuel.map_or_else(|| q("none"), |f| f.to_string())
        );
        let _ = writeln!(out, "timeout = {}", q(&duration_text(l.timeout)));
        if l.max_stdout_bytes == l.max_stderr_bytes {
            let _ = writeln!(out, "max_output = {}", size_text(l.max_stdout_bytes));
        } else {
            let _ = writeln!(
                out,
                "max_stdout = {}\nmax_stderr = {}",
                size_text(l.max_stdout_bytes),
                size_text(l.max_stderr_bytes)
            );
        }
        let _ = writeln!(out, "table_elements = {}", l.table_elements);
        let _ = writeln!(
            out,
            "instances = {}\ntables = {}\nmemories = {}",
            l.instances, l.tables, l.memories
        );
        let _ = writeln!(
            out,
            "disk = {}",
            l.disk_bytes.map_or_else(|| q("none"), size_text)
        );
        let _ = writeln!(out, "on_memory_limit = {}", q(l.on_memory_limit.as_str()));
        for d in &self.dirs {
            let mode = if d.access == Access::ReadOnly {
                "ro"
            } else {
                "rw"
            };
            let _ = writeln!(
                out,
                "\n[[dirs]]\nhost = {}\nguest = {}\nmode = {}",
                q(&d.host.to_string_lossy()),
                q(&d.guest),
                q(mode)
            );
        }
        let set: Vec<String> = self
            .env
            .iter()
            .map(|(k, v)| {
                // Bare keys where TOML allows them, quoted otherwise.
                let bare = k
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                let key = if bare { k.clone() } else { q(k) };
                format!("{key} = {}", q(v))
            })
            .collect();
        let _ = writeln!(
            out,
            "\n[env]\nset = {{ {} }}\ninherit = {}",
            set.join(", "),
            list(self.inherit_env.clone())
        );
        let _ = writeln!(
            out,
            "\n[network]\nallow = {}",
            list(self.network.allow.iter().map(ToString::to_string).collect())
        );
        let name = |o: Output| {
            if o == Output::Capture {
                "capture"
            } else {
                "closed"
            }
        };
        let _ = writeln!(
            out,
            "\n[stdio]\nstdin = {}\nstdout = {}\nstderr = {}",
            q(if self.stdin { "given" } else { "closed" }),
            q(name(self.stdout)),
            q(name(self.stderr))
        );
        let _ = writeln!(
            out,
            "\n[clocks]\nmode = {}",
            q(if self.clocks == Clocks::Real {
                "real"
            } else {
                "deterministic"
            })
        );
        match self.random {
            Randomness::Real => {
                let _ = writeln!(out, "\n[random]\nmode = \"real\"");
            }
            Randomness::Deterministic(seed) => {
                let _ = writeln!(out, "\n[random]\nmode = \"deterministic\"\nseed = {seed}");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Limits, NetRule};

    /// A directory to load policies against: `data/` and `other/` (directories) and `file`.
    fn base() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("data")).unwrap();
        std::fs::create_dir(dir.path().join("other")).unwrap();
        std::fs::write(dir.path().join("file"), "").unwrap();
        dir
    }

    /// The TOML example of this module's documentation.
    fn documented_example() -> String {
        include_str!("file.rs")
            .lines()
            .skip_while(|l| !l.starts_with("//! ```toml"))
            .skip(1)
            .take_while(|l| !l.starts_with("//! ```"))
            .map(|l| l.trim_start_matches("//!").trim_start_matches(' '))
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn the_module_example_loads() {
        let dir = base();
        let policy = Policy::from_toml(&documented_example(), dir.path()).unwrap();
        let expected = Policy {
            dirs: vec![DirGrant {
                host: dir.path().join("data").canonicalize().unwrap(),
                guest: "/data".into(),
                access: Access::ReadOnly,
            }],
            scratch: Some("/tmp".into()),
            env: [("LANG".to_owned(), "C.UTF-8".to_owned())].into(),
            inherit_env: vec!["TZ".into()],
            args: vec!["--verbose".into()],
            stdin: true,
            stdout: Output::Capture,
            stderr: Output::Capture,
            clocks: Clocks::Real,
            random: Randomness::Deterministic(42),
            network: crate::NetworkPolicy {
                allow: vec![
                    NetRule::HostPort {
                        host: "api.example.com".into(),
                        port: Some(443),
                    },
                    "10.1.2.0/24".parse().unwrap(),
                ],
            },
            limits: Limits {
                memory_bytes: 64 << 20,
                fuel: Some(1_000_000_000),
                timeout: Duration::from_secs(2),
                max_stdout_bytes: 1 << 20,
                max_stderr_bytes: 1 << 20,
                table_elements: 10_000,
                instances: 1,
                ..Limits::default()
            },
        };
        assert_eq!(policy, expected);
        // The effective policy prints and reads back to the same policy.
        assert_eq!(
            Policy::from_toml(&policy.to_toml(), Path::new("/")).unwrap(),
            policy
        );
    }

    /// Loads `text` against [`base`] and expects exactly this error message.
    fn rejects(text: &str, expected: &str) {
        let dir = base();
        match Policy::from_toml(text, dir.path()) {
            Ok(p) => panic!("accepted {text:?} as {p:?}"),
            Err(e) => {
                let canonical = dir.path().canonicalize().unwrap();
                let message = e
                    .to_string()
                    .replace(&*canonical.to_string_lossy(), "BASE")
                    .replace(&*dir.path().to_string_lossy(), "BASE");
                assert_eq!(message, expected, "for {text:?}");
            }
        }
    }

    #[test]
    fn mistakes_name_the_key_and_the_reason() {
        for (text, expected) in [
            (
                "networks = 1",
                "line 1: unknown key `networks`, expected one of `profile`, `args`, `scratch`, \
                 `limits`, `dirs`, `env`, `network`, `stdio`, `clocks`, `random`",
            ),
            (
                "[limits]\nmemroy = 1",
                "limits (line 2): unknown key `memroy`, expected one of `memory`, `fuel`, \
                 `timeout`, `max_output`, `max_stdout`, `max_stderr`, `table_elements`, \
                 `instances`, `tables`, `memories`, `disk`, `on_memory_limit`",
            ),
            (
                "[[dirs]]\nhost = \"data\"\n[[dirs]]\nhost = \"other\"\nguset = \"/a\"",
                "dirs[1] (line 5): unknown key `guset`, expected one of `host`, `guest`, `mode`",
            ),
            (
                "[[dirs]]\nguest = \"/x\"",
                "dirs[0] (line 1): missing field `host`",
            ),
            (
                "[limits]\nmemory = 1.5",
                "limits.memory (line 2): invalid type: floating point `1.5`, expected a size \
                 such as \"64MiB\" or a number of bytes",
            ),
            (
                "[limits]\nmax_output = -1",
                "limits.max_output (line 2): invalid value: integer `-1`, expected a size \
                 such as \"64MiB\" or a number of bytes",
            ),
            (
                "[limits]\ntimeout = 2",
                "limits.timeout (line 2): invalid type: integer `2`, expected a duration such \
                 as \"500ms\" or \"2s\"",
            ),
            (
                "[limits]\nfuel = -3",
                "limits.fuel (line 2): invalid value: integer `-3`, expected a number of fuel \
                 units or \"none\"",
            ),
            (
                "[env]\nset = { A = 1 }",
                "env.set (line 2): invalid type: integer `1`, expected a string",
            ),
            (
                "[network\nallow = []",
                "line 1: unclosed table, expected `]`",
            ),
            (
                "[limits]\nmemory = \"12 parsecs\"",
                "limits.memory: unknown size unit \"parsecs\" in \"12 parsecs\"; use B, KiB, \
                 MiB or GiB",
            ),
            (
                "[limits]\nmemory = \"lots\"",
                "limits.memory: \"lots\" is not a size; write it like 64MiB, 512KiB or 1048576",
            ),
            (
                "[limits]\nmemory = 0",
                "limits.memory: must be larger than zero",
            ),
            (
                "[limits]\nmemory = \"5GiB\"",
                "limits.memory: cannot exceed 4 GiB: a 32-bit guest cannot address more",
            ),
            (
                "[limits]\ntimeout = \"0s\"",
                "limits.timeout: must be longer than zero",
            ),
            (
                "[limits]\ntimeout = \"soon\"",
                "limits.timeout: \"soon\" is not a duration; write it like 500ms, 2s or 1m",
            ),
            (
                "[limits]\nfuel = 0",
                "limits.fuel: must be larger than zero, or \"none\" for unmetered",
            ),
            (
                "[limits]\nfuel = \"lots\"",
                "limits.fuel: \"lots\" is not a number or \"none\"",
            ),
            (
                "[[dirs]]\nhost = \"data\"\n[[dirs]]\nhost = \"nope\"",
                "dirs[1].host: BASE/nope cannot be opened: it does not exist",
            ),
            (
                "[[dirs]]\nhost = \"file\"",
                "dirs[0].host: BASE/file is not a directory",
            ),
            (
                "[[dirs]]\nhost = \"data\"\nguest = \"data\"",
                "dirs[0].guest: \"data\" must be an absolute guest path such as /data",
            ),
            (
                "[[dirs]]\nhost = \"data\"\nguest = \"/a/../b\"",
                "dirs[0].guest: \"/a/../b\" must not contain `..`",
            ),
            (
                "[[dirs]]\nhost = \"data\"\nmode = \"rwx\"",
                "dirs[0].mode: \"rwx\" is not a mode; use \"ro\" or \"rw\"",
            ),
            (
                "[[dirs]]\nhost = \"data\"\nguest = \"/a\"\n[[dirs]]\nhost = \"other\"\nguest = \"/a/\"",
                "dirs[1].guest: /a/ is already granted by dirs[0]",
            ),
            (
                "[[dirs]]\nhost = \"data\"\nguest = \"/a\"\n\
                 [[dirs]]\nhost = \"./other/../data\"\nguest = \"/b\"\nmode = \"ro\"",
                "dirs[1].mode: BASE/data is granted both read-only and read-write (also by \
                 dirs[0]); grant it once",
            ),
            (
                "scratch = \"/data\"\n[[dirs]]\nhost = \"data\"",
                "scratch: /data is also granted as a directory by dirs[0]",
            ),
            (
                "scratch = \"tmp\"",
                "scratch: \"tmp\" must be an absolute guest path such as /data",
            ),
            (
                "[env]\nset = { A = \"1\" }\ninherit = [\"B\", \"A\"]",
                "env.inherit[1]: A is both set and inherited; choose one",
            ),
            (
                "[env]\nset = { \"A=B\" = \"1\" }",
                "env.set: \"A=B\" is not a valid variable name: it must be non-empty, without \
                 `=` or NUL",
            ),
            (
                "[env]\ninherit = [\"\"]",
                "env.inherit[0]: \"\" is not a valid variable name: it must be non-empty, \
                 without `=` or NUL",
            ),
            (
                "[env]\nset = { A = \"x\\u0000y\" }",
                "env.set.A: the value \"x\\0y\" contains a NUL byte",
            ),
            (
                "args = [\"ok\", \"a\\u0000b\"]",
                "args[1]: the argument \"a\\0b\" contains a NUL byte",
            ),
            (
                "[network]\nallow = [\"api.example.com:443\", \"10.0.0.0/33\"]",
                "network.allow[1]: \"10.0.0.0/33\" is not a valid CIDR range",
            ),
            (
                "[stdio]\nstdin = \"open\"",
                "stdio.stdin: \"open\" is not a stdin; use \"given\" or \"closed\"",
            ),
            (
                "[stdio]\nstderr = \"file\"",
                "stdio.stderr: \"file\" is not an output; use \"capture\" or \"closed\"",
            ),
            (
                "[clocks]\nmode = \"frozen\"",
                "clocks.mode: \"frozen\" is not a mode; use \"real\" or \"deterministic\"",
            ),
            (
                "[random]\nmode = \"real\"\nseed = 1",
                "random.seed: a seed contradicts mode \"real\"",
            ),
            (
                "profile = \"lax\"",
                "profile: unknown profile \"lax\"; choose strict, standard or permissive",
            ),
        ] {
            rejects(text, expected);
        }
    }

    #[test]
    fn a_file_extends_its_profile_or_the_base() {
        let dir = base();
        let policy = Policy::from_toml(
            "profile = \"strict\"\nargs = [\"-v\"]\n[limits]\nfuel = \"none\"",
            dir.path(),
        )
        .unwrap();
        let strict = Policy::profile(Profile::Strict);
        assert_eq!(policy.args, ["-v"]);
        assert_eq!(policy.limits.fuel, None);
        assert_eq!(policy.limits.timeout, strict.limits.timeout);
        // Without a profile of its own, the file extends the base it is loaded over.
        let base = Policy::profile(Profile::Standard);
        let policy =
            Policy::from_toml_over(base.clone(), "[limits]\ntimeout = \"5s\"", dir.path()).unwrap();
        assert_eq!(policy.scratch, base.scratch);
        assert_eq!(policy.limits.timeout, Duration::from_secs(5));
        // Paths are relative to the file.
        let path = dir.path().join("policy.toml");
        std::fs::write(&path, "[[dirs]]\nhost = \"data\"\n").unwrap();
        let policy = Policy::load(&path).unwrap();
        assert_eq!(
            policy.dirs[0].host,
            dir.path().join("data").canonicalize().unwrap()
        );
        let missing = Policy::load(&dir.path().join("missing.toml")).unwrap_err();
        assert!(
            matches!(&missing, PolicyError::File { path, .. } if path.ends_with("missing.toml")),
            "{missing}"
        );
    }

    #[test]
    fn every_policy_prints_and_reads_back() {
        let dir = base();
        let rich = Policy::builder()
            .dir(dir.path().join("data"), "/data", Access::ReadOnly)
            .dir(dir.path().join("other"), "/out put", Access::ReadWrite)
            .scratch("/tmp")
            .env("LANG", "C.UTF-8")
            .env("odd key.with \"quotes\"", "line\nbreak")
            .inherit_env("TZ")
            .arg("--flag=\"x\"")
            .arg("")
            .close_stdin()
            .stdout(Output::Closed)
            .clocks(Clocks::Deterministic)
            .random(Randomness::Deterministic(u64::MAX))
            .allow_net("*.example.com:*")
            .allow_net("[2001:db8::1]:443")
            .allow_net("10.0.0.0/8")
            .limits(Limits {
                memory_bytes: 12_345,
                table_elements: 7,
                instances: 2,
                tables: 3,
                memories: 4,
                fuel: None,
                timeout: Duration::from_micros(1_234_567),
                max_stdout_bytes: 0,
                max_stderr_bytes: 3 << 10,
                disk_bytes: None,
                on_memory_limit: crate::OnMemoryLimit::Terminate,
            })
            .build()
            .unwrap();
        let policies = [
            rich,
            Policy::default(),
            Policy::profile(Profile::Strict),
            Policy::profile(Profile::Standard),
            Policy::profile(Profile::Permissive),
        ];
        for policy in policies {
            let text = policy.to_toml();
            assert_eq!(
                Policy::from_toml(&text, Path::new("/")).as_ref(),
                Ok(&policy),
                "{text}"
            );
        }
    }

    #[test]
    fn limits_print_in_units() {
        let text = Policy::default().to_toml();
        for line in [
            "memory = \"64MiB\"",
            "fuel = 1000000000",
            "timeout = \"10s\"",
            "max_output = \"1MiB\"",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from {text}"
            );
        }
        let check = |d: Duration, expected: &str| assert_eq!(duration_text(d), expected);
        check(Duration::from_secs(120), "2m");
        check(Duration::from_secs(61), "61s");
        check(Duration::from_millis(1500), "1500ms");
        check(Duration::from_micros(1), "1us");
        let check = |n: u64, expected: &str| assert_eq!(size_text(n), expected);
        check(0, "0");
        check(1000, "1000");
        check(4 << 30, "\"4GiB\"");
        check(1536 << 10, "\"1536KiB\"");
    }
}
