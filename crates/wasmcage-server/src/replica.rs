//! The replica id: which of several `wasmcage serve` processes holds a session.
//!
//! Sessions live in one process's memory. With more than one replica behind a load
//! balancer, a session id names its replica (`<replica>.<32 hex digits>`), so that a request
//! that reaches another replica is told where the session is (421 `wrong_replica`) instead
//! of being told it does not exist.
//!
//! The id comes from configuration (`replica_id`), else `$WASMCAGE_REPLICA_ID` (set from
//! the pod's name in Kubernetes), else the host name. Configured ids are checked strictly;
//! ids taken from the environment or the host name are made to fit.

use sha2::Digest;

/// The longest replica id: a DNS label, so that an id can name a host.
pub const MAX_LEN: usize = 63;

/// The id used when neither the environment nor the host name gives one.
pub const FALLBACK: &str = "wasmcage";

/// Checks a configured replica id: 1 to 63 characters of `a`-`z`, `0`-`9` and `-`.
pub fn check(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > MAX_LEN {
        return Err(format!(
            "{:?} must be 1 to {MAX_LEN} characters long",
            clip(id)
        ));
    }
    if let Some(c) = id
        .chars()
        .find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '-'))
    {
        return Err(format!(
            "{:?} contains {c:?}; use lowercase letters, digits and '-'",
            clip(id)
        ));
    }
    Ok(())
}

/// Whether `id` is a well-formed replica id (see [`check`]).
pub fn is_valid(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_LEN
        && id
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-'))
}

/// Makes a replica id of a name from the environment or the host: lowercased, every other
/// character replaced by `-`, outer dashes trimmed; a name longer than [`MAX_LEN`] keeps its
/// first 54 characters and gets 8 hex digits of its SHA-256, so that two long names that
/// share a prefix (pod names differ at their end) stay distinct. An empty result is
/// [`FALLBACK`].
pub fn sanitise(raw: &str) -> String {
    let mapped: String = raw
        .trim()
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '-') => c,
            _ => '-',
        })
        .collect();
    let trimmed = mapped.trim_matches('-');
    if trimmed.is_empty() {
        return FALLBACK.to_owned();
    }
    if trimmed.len() <= MAX_LEN {
        return trimmed.to_owned();
    }
    let digest = sha2::Sha256::digest(trimmed.as_bytes());
    let hex: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{hex}", trimmed[..54].trim_end_matches('-'))
}

/// The default replica id: `$WASMCAGE_REPLICA_ID` when set and not empty, else the host
/// name, else [`FALLBACK`]; sanitised either way.
pub fn default_id() -> String {
    if let Some(v) = std::env::var_os("WASMCAGE_REPLICA_ID").filter(|v| !v.is_empty()) {
        return sanitise(&v.to_string_lossy());
    }
    sanitise(&hostname().unwrap_or_default())
}

/// The host's name, read from the kernel (Linux) or `$HOSTNAME`; at most 256 bytes of it.
fn hostname() -> Option<String> {
    let from_kernel = std::fs::read("/proc/sys/kernel/hostname")
        .ok()
        .map(|b| String::from_utf8_lossy(&b[..b.len().min(256)]).into_owned());
    from_kernel
        .filter(|h| !h.trim().is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.chars().take(256).collect())
}

/// A session id as a caller sends it, split into its replica and the id that replica's
/// session table knows; `None` when it is not one (the caller gets 404 as before).
pub fn split_session_id(id: &str) -> Option<(&str, &str)> {
    if id.len() > MAX_LEN + 1 + 32 {
        return None;
    }
    let (replica, local) = id.split_once('.')?;
    let local_ok = local.len() == 32
        && local
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    (is_valid(replica) && local_ok).then_some((replica, local))
}

fn clip(s: &str) -> String {
    s.chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitise_fits_any_name() {
        for (raw, want) in [
            ("wasmcage-7d9f8c6b5-x2k4q", "wasmcage-7d9f8c6b5-x2k4q"),
            ("Host.Example.COM\n", "host-example-com"),
            ("  --a_b--  ", "a-b"),
            ("", FALLBACK),
            ("...", FALLBACK),
            ("ünï", "n"),
        ] {
            assert_eq!(sanitise(raw), want, "{raw:?}");
            assert!(check(&sanitise(raw)).is_ok());
        }
        let long_a = format!("{}a", "x".repeat(70));
        let long_b = format!("{}b", "x".repeat(70));
        let (a, b) = (sanitise(&long_a), sanitise(&long_b));
        assert_ne!(a, b);
        assert!(a.len() <= MAX_LEN && check(&a).is_ok(), "{a}");
    }

    #[test]
    fn check_refuses_what_sanitise_would_change() {
        assert!(check("replica-a").is_ok());
        for bad in ["", "A", "a.b", "a b", "a_b", &"a".repeat(64)] {
            assert!(check(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn session_ids_split_strictly() {
        let local = "0123456789abcdef0123456789abcdef";
        assert_eq!(
            split_session_id(&format!("r-1.{local}")),
            Some(("r-1", local))
        );
        for bad in [
            local.to_owned(),
            format!(".{local}"),
            format!("R.{local}"),
            format!("a.b.{local}"),
            format!("a.{}", &local[1..]),
            format!("a.{}", local.to_uppercase()),
            format!("{}.{local}", "a".repeat(64)),
            "a./../../etc/passwd".to_owned(),
        ] {
            assert_eq!(split_session_id(&bad), None, "{bad:?}");
        }
    }
}
