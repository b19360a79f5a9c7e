//! Parsers for the sizes and durations that configuration files and flags share, so that
//! `64MiB` and `500ms` mean the same thing everywhere.

use std::time::Duration;

/// Parses a byte size: a number with an optional unit. `K`, `M`, `G` and `KiB`, `MiB`, `GiB`
/// are binary; `KB`, `MB`, `GB` are decimal; `B` or nothing is bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a size; write it like 64MiB, 512KiB or 1048576"))?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        other => {
            return Err(format!(
                "unknown size unit {other:?} in {text:?}; use B, KiB, MiB or GiB"
            ));
        }
    };
    n.checked_mul(multiplier)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// Parses a duration: a number with a unit of `us`, `ms`, `s`, `m` or `h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration; write it like 500ms, 2s or 1m"))?;
    let seconds = match unit.trim() {
        "us" | "µs" => n / 1e6,
        "ms" => n / 1e3,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        "" => return Err(format!("{text:?} needs a unit: us, ms, s, m or h")),
        other => {
            return Err(format!(
                "unknown duration unit {other:?} in {text:?}; use us, ms, s or m"
            ));
        }
    };
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("{text:?} is out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn sizes() {
        let check = |text: &str, expected: Option<u64>| {
            assert_eq!(parse_size(text).ok(), expected, "{text}")
        };
        check("64MiB", Some(64 << 20));
        check("64M", Some(64 << 20));
        check("64MB", Some(64_000_000));
        check("512KiB", Some(512 << 10));
        check("1048576", Some(1 << 20));
        check("10B", Some(10));
        check("1GiB", Some(1 << 30));
        check("MiB", None);
        check("12 parsecs", None);
        check("99999999999GiB", None);
    }

    #[test]
    fn durations() {
        let check = |text: &str, expected: Option<Duration>| {
            assert_eq!(parse_duration(text).ok(), expected, "{text}")
        };
        check("500ms", Some(Duration::from_millis(500)));
        check("2s", Some(Duration::from_secs(2)));
        check("1.5s", Some(Duration::from_millis(1500)));
        check("1m", Some(Duration::from_secs(60)));
        check("1h", Some(Duration::from_secs(3600)));
        check("250us", Some(Duration::from_micros(250)));
        check("5", None);
        check("fast", None);
    }
}
