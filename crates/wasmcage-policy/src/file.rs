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

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

use serde::Deserialize;

use crate::{
    Access, Clocks, DirGrant, Output, Policy, PolicyError, Profile, Randomness, invalid,
    parse_duration, parse_size,
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

#[derive(Deserialize)]
#[serde(untagged)]
enum Amount {
    Number(u64),
    Text(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileLimits {
    memory: Option<Amount>,
    fuel: Option<Amount>,
    timeout: Option<String>,
    max_output: Option<Amount>,
    max_stdout: Option<Amount>,
    max_stderr: Option<Amount>,
    table_elements: Option<u64>,
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

fn size(key: &str, amount: Amount) -> Result<u64, PolicyError> {
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
        let file: File = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            let at = line.map_or(String::new(), |l| format!("line {l}"));
            invalid(
                if at.is_empty() { "policy".into() } else { at },
                e.message().to_owned(),
            )
        })?;
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
            if let Some(fuel) = l.fuel {
                limits.fuel = match fuel {
                    Amount::Number(n) => Some(n),
                    Amount::Text(t) if t == "none" => None,
                    Amount::Text(t) => Some(t.replace('_', "").parse().map_err(|_| {
                        invalid("limits.fuel", format!("{t:?} is not a number or \"none\""))
                    })?),
                };
            }
            if let Some(t) = l.timeout {
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
            let host = base_dir.join(&d.host);
            let host = host.canonicalize().map_err(|e| {
                invalid(
                    key("host"),
                    format!("{} cannot be opened: {e}", host.display()),
                )
            })?;
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
        let q = |s: &str| toml::Value::String(s.to_owned()).to_string();
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
        let _ = writeln!(out, "\n[limits]\nmemory = {}", l.memory_bytes);
        let _ = writeln!(
            out,
            "fuel = {}",
            l.fuel.map_or_else(|| q("none"), |f| f.to_string())
        );
        let _ = writeln!(
            out,
            "timeout = {}",
            q(&format!("{}us", l.timeout.as_micros()))
        );
        let _ = writeln!(
            out,
            "max_stdout = {}\nmax_stderr = {}",
            l.max_stdout_bytes, l.max_stderr_bytes
        );
        let _ = writeln!(out, "table_elements = {}", l.table_elements);
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
    use std::time::Duration;

    use super::*;
    use crate::NetRule;

    fn load(text: &str) -> Result<Policy, PolicyError> {
        Policy::from_toml(text, Path::new("."))
    }

    #[test]
    fn the_module_example_loads() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("data")).unwrap();
        let doc = include_str!("file.rs");
        let example: String = doc
            .lines()
            .skip_while(|l| !l.starts_with("//! ```toml"))
            .skip(1)
            .take_while(|l| !l.starts_with("//! ```"))
            .map(|l| l.trim_start_matches("//!").trim_start_matches(' '))
            .collect::<Vec<_>>()
            .join("\n");
        let policy = Policy::from_toml(&example, dir.path()).unwrap();
        assert_eq!(policy.dirs[0].guest, "/data");
        assert_eq!(policy.dirs[0].access, Access::ReadOnly);
        assert_eq!(policy.limits.timeout, Duration::from_secs(2));
        assert_eq!(policy.limits.memory_bytes, 64 << 20);
        assert_eq!(policy.env["LANG"], "C.UTF-8");
        assert_eq!(policy.random, Randomness::Deterministic(42));
        assert_eq!(
            policy.network.allow[0],
            NetRule::HostPort {
                host: "api.example.com".into(),
                port: Some(443)
            }
        );
        assert_eq!(policy.scratch.as_deref(), Some("/tmp"));
        // The effective policy prints and reads back to the same policy.
        assert_eq!(
            Policy::from_toml(&policy.to_toml(), dir.path()).unwrap(),
            policy
        );
    }

    fn rejects(text: &str, says: &str) {
        match load(text) {
            Ok(_) => panic!("accepted {text:?}"),
            Err(e) => assert!(e.to_string().contains(says), "expected {says:?} in {e}"),
        }
    }

    #[test]
    fn mistakes_name_the_key_and_the_reason() {
        rejects("networks = 1", "unknown field `networks`");
        rejects("[limits]\nmemory = \"12 parsecs\"", "limits.memory");
        rejects(
            "[limits]\ntimeout = \"0s\"",
            "limits.timeout: must be longer than zero",
        );
        rejects("[limits]\nmemory = \"8GiB\"", "cannot exceed 4 GiB");
        rejects("[limits]\nfuel = 0", "limits.fuel");
        rejects("[[dirs]]\nhost = \"/definitely/not/here\"", "dirs[0].host");
        rejects("[[dirs]]\nhost = \".\"\nguest = \"data\"", "dirs[0].guest");
        rejects("[[dirs]]\nhost = \".\"\nmode = \"rwx\"", "dirs[0].mode");
        rejects(
            "[[dirs]]\nhost = \".\"\nguest = \"/a\"\n[[dirs]]\nhost = \".\"\nguest = \"/b\"\nmode = \"ro\"",
            "both read-only and read-write",
        );
        rejects(
            "[[dirs]]\nhost = \".\"\nguest = \"/a\"\n[[dirs]]\nhost = \"src\"\nguest = \"/a\"",
            "already granted",
        );
        rejects("[network]\nallow = [\"10.0.0.0/33\"]", "network.allow[0]");
        rejects(
            "[env]\nset = { A = \"1\" }\ninherit = [\"A\"]",
            "both set and inherited",
        );
        rejects("[random]\nmode = \"real\"\nseed = 1", "contradicts");
        rejects("profile = \"lax\"", "unknown profile");
    }

    #[test]
    fn nothing_is_granted_by_default_and_profiles_differ() {
        let p = Policy::default();
        assert!(
            p.dirs.is_empty()
                && p.scratch.is_none()
                && p.env.is_empty()
                && p.network.allow.is_empty()
        );
        assert_eq!(
            Policy::profile(Profile::Strict).limits.timeout,
            Duration::from_secs(1)
        );
        assert_eq!(
            Policy::profile(Profile::Standard).scratch.as_deref(),
            Some("/scratch")
        );
        let permissive = Policy::profile(Profile::Permissive);
        assert!(permissive.network.check_host("example.com", 443).is_ok());
        assert!(
            permissive
                .network
                .check_addr("127.0.0.1:443".parse().unwrap())
                .is_err()
        );
        assert_eq!(permissive.limits.fuel, None);
    }

    #[test]
    fn cli_directory_grants() {
        let check = |s: &str, host: &str, guest: &str, access| {
            assert_eq!(
                s.parse::<DirGrant>().unwrap(),
                DirGrant {
                    host: host.into(),
                    guest: guest.into(),
                    access
                },
                "{s}"
            );
        };
        check("./data", "./data", "/data", Access::ReadWrite);
        check("/srv/in::/input:ro", "/srv/in", "/input", Access::ReadOnly);
        check(
            "/srv/out::/output",
            "/srv/out",
            "/output",
            Access::ReadWrite,
        );
        assert!("::/x".parse::<DirGrant>().is_err());
    }

    #[test]
    fn the_builder_reads_like_wasi_ctx_builder() {
        let dir = tempfile::tempdir().unwrap();
        let policy = Policy::builder()
            .dir(dir.path(), "/data", Access::ReadOnly)
            .env("MODE", "test")
            .inherit_env("TZ")
            .allow_net("api.example.com:443")
            .build()
            .unwrap();
        assert_eq!(policy.dirs.len(), 1);
        assert!(Policy::builder().allow_net("nope").build().is_err());
    }
}
