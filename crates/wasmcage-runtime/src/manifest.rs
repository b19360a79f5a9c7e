//! `runtime.toml`: what a runtime is (language, version, module and its hash), how to start it
//! (argument templates, environment), its default limits and its read-only library
//! directories.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Component, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use wasmcage_events::units::{parse_duration, parse_size};

use crate::RuntimeError;

/// The file name of a runtime's manifest inside its directory.
pub const MANIFEST_FILE: &str = "runtime.toml";
/// The module's file name when the manifest names none.
pub const DEFAULT_MODULE: &str = "module.wasm";
/// The placeholder in `argv_code` that becomes the code to run.
pub const CODE_PLACEHOLDER: &str = "{code}";
/// The placeholder in `argv_file` that becomes the script's path.
pub const FILE_PLACEHOLDER: &str = "{file}";

/// A runtime's name: `[a-z0-9][a-z0-9_-]{0,31}`. It is a directory name under the registry,
/// so anything else (`..`, `a/b`, control characters, upper case that would collide on a
/// case-insensitive filesystem) is refused before a path is built from it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RuntimeName(String);

impl RuntimeName {
    /// Checks `name`.
    pub fn new(name: &str) -> Result<RuntimeName, RuntimeError> {
        check_label(name).map_err(|reason| RuntimeError::InvalidName {
            name: name.to_owned(),
            reason,
        })?;
        Ok(RuntimeName(name.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RuntimeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for RuntimeName {
    type Err = RuntimeError;
    fn from_str(s: &str) -> Result<RuntimeName, RuntimeError> {
        RuntimeName::new(s)
    }
}

impl TryFrom<String> for RuntimeName {
    type Error = RuntimeError;
    fn try_from(s: String) -> Result<RuntimeName, RuntimeError> {
        RuntimeName::new(&s)
    }
}

impl From<RuntimeName> for String {
    fn from(n: RuntimeName) -> String {
        n.0
    }
}

/// `[a-z0-9][a-z0-9_-]{0,31}`.
fn check_label(s: &str) -> Result<(), &'static str> {
    let mut chars = s.chars();
    match chars.next() {
        None => return Err("it is empty"),
        Some(c) if !(c.is_ascii_lowercase() || c.is_ascii_digit()) => {
            return Err("it must start with a lower-case letter or a digit");
        }
        Some(_) => {}
    }
    if s.len() > 32 {
        return Err("it is longer than 32 characters");
    }
    if !chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-') {
        return Err("only lower-case letters, digits, '_' and '-' are allowed");
    }
    Ok(())
}

/// A SHA-256 digest, written as 64 lower-case hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Sha256(pub [u8; 32]);

impl Sha256 {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Sha256 {
        use sha2::Digest;
        Sha256(sha2::Sha256::digest(bytes).into())
    }

    /// The first `n` hex digits, for tables.
    pub fn prefix(&self, n: usize) -> String {
        let mut s = self.to_string();
        s.truncate(n);
        s
    }
}

impl fmt::Display for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha256({self})")
    }
}

impl FromStr for Sha256 {
    type Err = String;
    fn from_str(s: &str) -> Result<Sha256, String> {
        let hex = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        };
        let b = s.as_bytes();
        let mut out = [0u8; 32];
        if b.len() != 64 {
            return Err(format!(
                "{s:?} is not a sha256: it needs 64 lower-case hex digits"
            ));
        }
        for (i, pair) in b.chunks(2).enumerate() {
            match (hex(pair[0]), hex(pair[1])) {
                (Some(h), Some(l)) => out[i] = h << 4 | l,
                _ => {
                    return Err(format!(
                        "{s:?} is not a sha256: it needs 64 lower-case hex digits"
                    ));
                }
            }
        }
        Ok(Sha256(out))
    }
}

impl TryFrom<String> for Sha256 {
    type Error = String;
    fn try_from(s: String) -> Result<Sha256, String> {
        s.parse()
    }
}

impl From<Sha256> for String {
    fn from(d: Sha256) -> String {
        d.to_string()
    }
}

/// Which built-in driver (pre-start and session support) applies to a runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Driver {
    /// The CPython driver.
    Python,
    /// The QuickJS driver.
    #[serde(rename = "javascript")]
    JavaScript,
}

impl Driver {
    /// The name used in manifests and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Driver::Python => "python",
            Driver::JavaScript => "javascript",
        }
    }
}

impl FromStr for Driver {
    type Err = String;
    fn from_str(s: &str) -> Result<Driver, String> {
        match s {
            "python" => Ok(Driver::Python),
            "javascript" => Ok(Driver::JavaScript),
            _ => Err(format!(
                "unknown driver {s:?}; the drivers are python and javascript"
            )),
        }
    }
}

/// A runtime's default limits; each one left out falls back to the caller's own default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RuntimeLimits {
    /// Fuel per execution.
    pub fuel: Option<u64>,
    /// Linear memory in bytes.
    pub memory: Option<u64>,
    /// Wall-clock time per execution.
    pub timeout: Option<Duration>,
}

/// A read-only library directory: `host`, relative to the runtime's directory and inside it,
/// is mounted at the absolute `guest` path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LibDir {
    /// The directory, relative to the runtime's directory (no `..`, not absolute).
    pub host: PathBuf,
    /// Where the guest sees it: an absolute path without `.` or `..`.
    pub guest: String,
}

/// A runtime's manifest. Parsed with `from_toml`, which validates everything; a manifest
/// built in code is checked by `validate`, which the registry calls before it writes one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The runtime's name (its directory's name).
    pub name: RuntimeName,
    /// The language: `python`, `javascript`, or another name of the same form.
    pub language: String,
    /// The interpreter's version, e.g. `3.12.0`.
    pub version: String,
    /// The module's file name inside the runtime's directory.
    pub module: String,
    /// The module's SHA-256.
    pub sha256: Sha256,
    /// The arguments to run code given inline; one of them is exactly `{code}`.
    pub argv_code: Vec<String>,
    /// The arguments to run a script file; one of them is exactly `{file}`, and the script's
    /// own arguments follow.
    pub argv_file: Vec<String>,
    /// The arguments to run a script read from stdin; the script's arguments follow.
    pub argv_stdin: Vec<String>,
    /// Environment variables the interpreter always gets.
    pub env: BTreeMap<String, String>,
    /// The built-in driver that applies, if any.
    pub driver: Option<Driver>,
    /// Default limits.
    pub limits: RuntimeLimits,
    /// Read-only library directories.
    pub lib_dirs: Vec<LibDir>,
}

/// The TOML form. Every field is optional here so that `wasmcage runtime add --manifest`
/// can read a file without `name` or `sha256`; `Manifest` requires them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ManifestFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub argv_code: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub argv_file: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub argv_stdin: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<Driver>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "LimitsFile::is_empty")]
    pub limits: LimitsFile,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lib_dirs: Vec<LibDir>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LimitsFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fuel: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

impl LimitsFile {
    fn is_empty(&self) -> bool {
        self.fuel.is_none() && self.memory.is_none() && self.timeout.is_none()
    }
}

impl ManifestFile {
    pub(crate) fn parse(text: &str) -> Result<ManifestFile, RuntimeError> {
        toml::from_str(text).map_err(|e| RuntimeError::manifest(e.message().to_owned()))
    }

    pub(crate) fn limits(&self) -> Result<RuntimeLimits, RuntimeError> {
        let l = &self.limits;
        Ok(RuntimeLimits {
            fuel: l.fuel,
            memory: l
                .memory
                .as_deref()
                .map(parse_size)
                .transpose()
                .map_err(|e| RuntimeError::manifest(format!("limits.memory: {e}")))?,
            timeout: l
                .timeout
                .as_deref()
                .map(parse_duration)
                .transpose()
                .map_err(|e| RuntimeError::manifest(format!("limits.timeout: {e}")))?,
        })
    }
}

impl Manifest {
    /// Parses and validates a `runtime.toml`. Unknown keys are refused.
    pub fn from_toml(text: &str) -> Result<Manifest, RuntimeError> {
        Manifest::from_file(ManifestFile::parse(text)?)
    }

    pub(crate) fn from_file(file: ManifestFile) -> Result<Manifest, RuntimeError> {
        let required = |value: Option<String>, key: &str| {
            value.ok_or_else(|| RuntimeError::manifest(format!("`{key}` is missing")))
        };
        let limits = file.limits()?;
        let manifest = Manifest {
            name: RuntimeName::new(&required(file.name, "name")?)?,
            language: required(file.language, "language")?,
            version: required(file.version, "version")?,
            module: file.module.unwrap_or_else(|| DEFAULT_MODULE.to_owned()),
            sha256: required(file.sha256, "sha256")?
                .parse()
                .map_err(|e| RuntimeError::manifest(format!("sha256: {e}")))?,
            argv_code: file
                .argv_code
                .ok_or_else(|| RuntimeError::manifest("`argv_code` is missing"))?,
            argv_file: file
                .argv_file
                .ok_or_else(|| RuntimeError::manifest("`argv_file` is missing"))?,
            argv_stdin: file
                .argv_stdin
                .ok_or_else(|| RuntimeError::manifest("`argv_stdin` is missing"))?,
            env: file.env,
            driver: file.driver,
            limits,
            lib_dirs: file.lib_dirs,
        };
        manifest.validate()?;
        Ok(manifest)
    }

    /// The manifest as TOML, in the form `from_toml` reads.
    pub fn to_toml(&self) -> String {
        let file = ManifestFile {
            name: Some(self.name.to_string()),
            language: Some(self.language.clone()),
            version: Some(self.version.clone()),
            module: Some(self.module.clone()),
            sha256: Some(self.sha256.to_string()),
            argv_code: Some(self.argv_code.clone()),
            argv_file: Some(self.argv_file.clone()),
            argv_stdin: Some(self.argv_stdin.clone()),
            driver: self.driver,
            env: self.env.clone(),
            limits: LimitsFile {
                fuel: self.limits.fuel,
                memory: self.limits.memory.map(format_size),
                timeout: self.limits.timeout.map(format_duration),
            },
            lib_dirs: self.lib_dirs.clone(),
        };
        toml::to_string(&file).expect("a manifest always serializes")
    }

    /// Checks every field: the language and version, the module's file name, the argument
    /// templates (placeholders whole and where they belong), the environment and the library
    /// directories (inside the runtime's directory, at absolute guest paths).
    pub fn validate(&self) -> Result<(), RuntimeError> {
        let bad = |reason: String| Err(RuntimeError::manifest(reason));
        if let Err(reason) = check_label(&self.language) {
            return bad(format!("language {:?}: {reason}", self.language));
        }
        if self.version.is_empty()
            || self.version.len() > 32
            || !self
                .version
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._+-".contains(c))
        {
            return bad(format!(
                "version {:?}: 1 to 32 letters, digits, '.', '_', '+' or '-'",
                self.version
            ));
        }
        if !is_plain_file_name(&self.module) || self.module == MANIFEST_FILE {
            return bad(format!(
                "module {:?}: a plain file name inside the runtime's directory, such as module.wasm",
                self.module
            ));
        }
        check_template("argv_code", &self.argv_code, Some(CODE_PLACEHOLDER))?;
        check_template("argv_file", &self.argv_file, Some(FILE_PLACEHOLDER))?;
        check_template("argv_stdin", &self.argv_stdin, None)?;
        for (key, value) in &self.env {
            let valid_key = key
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid_key {
                return bad(format!(
                    "env: {key:?} is not a variable name (letters, digits and '_', not starting with a digit)"
                ));
            }
            if value.contains('\0') {
                return bad(format!("env.{key}: the value contains a NUL byte"));
            }
        }
        for dir in &self.lib_dirs {
            let host_ok = !dir.host.as_os_str().is_empty()
                && dir
                    .host
                    .components()
                    .all(|c| matches!(c, Component::Normal(_)));
            if !host_ok {
                return bad(format!(
                    "lib_dirs: host {:?} must be a relative path inside the runtime's directory (no '..', not absolute)",
                    dir.host
                ));
            }
            // Checked as a string: `Path::components` would quietly drop a `.` segment.
            let guest_ok = dir.guest.len() <= 256
                && dir.guest.strip_prefix('/').is_some_and(|rest| {
                    rest.split('/').all(|segment| {
                        !matches!(segment, "" | "." | "..") && !segment.contains('\0')
                    })
                });
            if !guest_ok {
                return bad(format!(
                    "lib_dirs: guest {:?} must be an absolute path below / without '.' or '..'",
                    dir.guest
                ));
            }
        }
        Ok(())
    }

    /// The arguments that run `code`: `argv_code` with `{code}` replaced by `code`, as one
    /// argument whatever it contains.
    pub fn argv_for_code(&self, code: &str) -> Result<Vec<String>, RuntimeError> {
        no_nul(code, "code")?;
        Ok(substitute(&self.argv_code, CODE_PLACEHOLDER, code))
    }

    /// The arguments that run the script at the guest path `file` with `args`.
    pub fn argv_for_file(&self, file: &str, args: &[String]) -> Result<Vec<String>, RuntimeError> {
        no_nul(file, "file name")?;
        args.iter().try_for_each(|a| no_nul(a, "script argument"))?;
        let mut argv = substitute(&self.argv_file, FILE_PLACEHOLDER, file);
        argv.extend(args.iter().cloned());
        Ok(argv)
    }

    /// The arguments that run a script read from stdin, with `args`.
    pub fn argv_for_stdin(&self, args: &[String]) -> Result<Vec<String>, RuntimeError> {
        args.iter().try_for_each(|a| no_nul(a, "script argument"))?;
        let mut argv = self.argv_stdin.clone();
        argv.extend(args.iter().cloned());
        Ok(argv)
    }
}

fn no_nul(value: &str, what: &'static str) -> Result<(), RuntimeError> {
    if value.contains('\0') {
        return Err(RuntimeError::InvalidArgument { what });
    }
    Ok(())
}

/// `template` with every argument that is exactly `placeholder` replaced by `value`. Only
/// whole arguments are placeholders (validation refuses `--eval={code}`), so the value stays
/// one argument and its contents are never read as a placeholder.
fn substitute(template: &[String], placeholder: &str, value: &str) -> Vec<String> {
    template
        .iter()
        .map(|arg| {
            if arg == placeholder {
                value.to_owned()
            } else {
                arg.clone()
            }
        })
        .collect()
}

/// An argument template: a non-empty program name first, `placeholder` exactly once as a
/// whole argument, no other `{`/`}` placeholder-like text, no NUL.
fn check_template(
    key: &str,
    template: &[String],
    placeholder: Option<&str>,
) -> Result<(), RuntimeError> {
    let bad = |reason: String| Err(RuntimeError::manifest(format!("{key}: {reason}")));
    match template.first() {
        None => return bad("it is empty; the first argument is the program's name".into()),
        Some(first)
            if first.is_empty()
                || first.contains(CODE_PLACEHOLDER)
                || first.contains(FILE_PLACEHOLDER) =>
        {
            return bad("the first argument is the program's name, not a placeholder".into());
        }
        Some(_) => {}
    }
    if template.len() > 64 {
        return bad("more than 64 arguments".into());
    }
    let mut found = 0;
    for arg in template {
        if arg.contains('\0') {
            return bad(format!("{arg:?} contains a NUL byte"));
        }
        if Some(arg.as_str()) == placeholder {
            found += 1;
        } else if arg.contains(CODE_PLACEHOLDER) || arg.contains(FILE_PLACEHOLDER) {
            return bad(format!(
                "{arg:?}: a placeholder must be a whole argument{}",
                placeholder.map(|p| format!(" ({p})")).unwrap_or_default()
            ));
        }
    }
    match (placeholder, found) {
        (Some(_), 1) | (None, 0) => Ok(()),
        (Some(p), 0) => bad(format!(
            "it needs the placeholder {p} as one of its arguments"
        )),
        (Some(p), _) => bad(format!("the placeholder {p} appears more than once")),
        (None, _) => unreachable!("no placeholder is counted without one"),
    }
}

/// A name with one normal component: no separators, not `.` or `..`, printable ASCII.
fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

/// `268435456` as `256MiB`: the largest binary unit that divides it.
pub fn format_size(bytes: u64) -> String {
    for (shift, unit) in [(30, "GiB"), (20, "MiB"), (10, "KiB")] {
        if bytes != 0 && bytes.is_multiple_of(1 << shift) {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    format!("{bytes}B")
}

/// A duration in the largest of s, ms and us that holds it exactly.
pub fn format_duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else if d.as_nanos().is_multiple_of(1_000_000) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}us", d.as_micros())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn python() -> Manifest {
        crate::spec::PYTHON.manifest()
    }

    #[test]
    fn names() {
        let check = |name: &str, ok: bool| {
            assert_eq!(RuntimeName::new(name).is_ok(), ok, "{name:?}");
        };
        check("python", true);
        check("py3", true);
        check("3", true);
        check("quick_js-ng", true);
        check(&"a".repeat(32), true);
        check(&"a".repeat(33), false);
        check(&"a".repeat(200), false);
        check("", false);
        check("../x", false);
        check("..", false);
        check(".", false);
        check("a/b", false);
        check("a\\b", false);
        check("/abs", false);
        check("-x", false);
        check("_x", false);
        check("Python", false);
        check("py thon", false);
        check("py\nthon", false);
        check("py\0", false);
        check("py\x1b[31m", false);
        check("pyth\u{f6}n", false);
        check("python\u{202e}", false);
    }

    #[test]
    fn round_trips_through_toml() {
        for spec in crate::spec::BUILTIN {
            let manifest = spec.manifest();
            let text = manifest.to_toml();
            assert_eq!(Manifest::from_toml(&text).unwrap(), manifest, "{text}");
        }
        let text = python().to_toml();
        assert!(text.contains("memory = \"256MiB\""), "{text}");
        assert!(text.contains("timeout = \"30s\""), "{text}");
    }

    #[test]
    fn parses_the_documented_example() {
        let text = r#"
            name = "python"
            language = "python"
            version = "3.12.0"
            sha256 = "e5dc5a398b07b54ea8fdb503bf68fb583d533f10ec3f930963e02b9505f7a763"
            argv_code = ["python", "-c", "{code}"]
            argv_file = ["python", "{file}"]
            argv_stdin = ["python", "-"]
            driver = "python"
            env = { PYTHONDONTWRITEBYTECODE = "1" }
            lib_dirs = [{ host = "site-packages", guest = "/lib/site-packages" }]

            [limits]
            fuel = 5000000000
            memory = "256MiB"
            timeout = "30s"
        "#;
        let m = Manifest::from_toml(text).unwrap();
        assert_eq!(m.module, DEFAULT_MODULE);
        assert_eq!(m.limits.memory, Some(256 << 20));
        assert_eq!(m.limits.timeout, Some(Duration::from_secs(30)));
        assert_eq!(m.driver, Some(Driver::Python));
        assert_eq!(m.lib_dirs[0].guest, "/lib/site-packages");
    }

    #[test]
    fn the_manifest_in_the_guide_is_the_built_in_python_one() {
        let guide = include_str!("../../../docs/runtimes.md");
        let example = guide
            .split("```toml\n")
            .nth(1)
            .and_then(|rest| rest.split("```").next())
            .expect("docs/runtimes.md has a TOML example");
        let mut expected = python();
        expected.lib_dirs.push(LibDir {
            host: "site-packages".into(),
            guest: "/lib/site-packages".into(),
        });
        assert_eq!(Manifest::from_toml(example).unwrap(), expected);
    }

    #[test]
    fn refuses_bad_manifests() {
        let base = python().to_toml();
        let check = |edit: &dyn Fn(&mut Manifest), expected: &str| {
            let mut m = python();
            edit(&mut m);
            let err = m.validate().unwrap_err().to_string();
            assert!(err.contains(expected), "{err} (wanted {expected:?})");
        };
        check(&|m| m.language = "Py thon".into(), "language");
        check(&|m| m.version = String::new(), "version");
        check(&|m| m.version = "1.0\n".into(), "version");
        check(&|m| m.module = "../module.wasm".into(), "module");
        check(&|m| m.module = "a/b.wasm".into(), "module");
        check(&|m| m.module = "..".into(), "module");
        check(&|m| m.module = MANIFEST_FILE.into(), "module");
        check(&|m| m.argv_code = vec![], "argv_code: it is empty");
        check(&|m| m.argv_code = vec!["{code}".into()], "program's name");
        check(
            &|m| m.argv_code = vec!["python".into(), "-c".into()],
            "needs the placeholder",
        );
        check(
            &|m| m.argv_code = vec!["python".into(), "{code}".into(), "{code}".into()],
            "more than once",
        );
        check(
            &|m| m.argv_code = vec!["node".into(), "--eval={code}".into()],
            "whole argument",
        );
        check(
            &|m| m.argv_file = vec!["python".into(), "{code}".into(), "{file}".into()],
            "whole argument",
        );
        check(
            &|m| m.argv_stdin = vec!["python".into(), "{file}".into()],
            "argv_stdin",
        );
        check(&|m| m.argv_code[1] = "-\0c".into(), "NUL");
        check(
            &|m| {
                m.env.insert("A=B".into(), "1".into());
            },
            "env",
        );
        check(
            &|m| {
                m.env.insert("1A".into(), "1".into());
            },
            "env",
        );
        for host in ["../x", "/etc", "a/../../b", ""] {
            check(
                &|m| {
                    m.lib_dirs = vec![LibDir {
                        host: host.into(),
                        guest: "/lib".into(),
                    }]
                },
                "lib_dirs: host",
            );
        }
        for guest in [
            "lib",
            "/",
            "/lib/../etc",
            "/lib/./x",
            "/lib//x",
            "/lib/",
            "",
        ] {
            check(
                &|m| {
                    m.lib_dirs = vec![LibDir {
                        host: "lib".into(),
                        guest: guest.into(),
                    }]
                },
                "lib_dirs: guest",
            );
        }

        // Unknown keys, missing keys and malformed values in the file.
        let parse_err = |text: &str| Manifest::from_toml(text).unwrap_err().to_string();
        assert!(parse_err(&format!("{base}\nextra = 1")).contains("extra"));
        assert!(parse_err(&base.replace("sha256 = ", "# ")).contains("`sha256` is missing"));
        assert!(parse_err(&base.replace("e5dc5a", "E5DC5A")).contains("sha256"));
        assert!(parse_err(&base.replace("name = \"python\"", "name = \"../x\"")).contains("../x"));
        assert!(parse_err(&base.replace("256MiB", "lots")).contains("limits.memory"));
        assert!(parse_err(&base.replace("30s", "30")).contains("limits.timeout"));
        assert!(
            parse_err(&base.replace("driver = \"python\"", "driver = \"ruby\"")).contains("ruby")
        );
    }

    #[test]
    fn substitutes_placeholders_as_whole_arguments() {
        let m = python();
        let code = "print('{file}', 1)\nimport sys; print(sys.argv)  {code}";
        assert_eq!(
            m.argv_for_code(code).unwrap(),
            ["python", "-c", code],
            "the code is one argument, and placeholders inside it stay as they are"
        );
        assert_eq!(
            m.argv_for_file("/work/my script.py", &["a b".into(), "{code}".into()])
                .unwrap(),
            ["python", "/work/my script.py", "a b", "{code}"]
        );
        assert_eq!(
            m.argv_for_stdin(&["x".into()]).unwrap(),
            ["python", "-", "x"]
        );
        assert!(matches!(
            m.argv_for_code("a\0b"),
            Err(RuntimeError::InvalidArgument { what: "code" })
        ));
        assert!(m.argv_for_file("f", &["\0".into()]).is_err());

        let js = crate::spec::JAVASCRIPT.manifest();
        assert_eq!(
            js.argv_for_code("1+1").unwrap(),
            ["qjs", "--std", "-e", "1+1"]
        );
    }

    #[test]
    fn digests_and_units() {
        let d = Sha256::of(b"abc");
        assert_eq!(
            d.to_string(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(d.to_string().parse::<Sha256>().unwrap(), d);
        assert_eq!(d.prefix(12), "ba7816bf8f01");
        assert!(
            "BA7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
                .parse::<Sha256>()
                .is_err()
        );
        assert!("ba78".parse::<Sha256>().is_err());
        assert_eq!(format_size(256 << 20), "256MiB");
        assert_eq!(format_size(1 << 30), "1GiB");
        assert_eq!(format_size(1000), "1000B");
        assert_eq!(format_size(0), "0B");
        assert_eq!(format_duration(Duration::from_secs(30)), "30s");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(format_duration(Duration::from_micros(3)), "3us");
    }
}
