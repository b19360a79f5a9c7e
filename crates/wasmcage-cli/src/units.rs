//! Parsing of option values; sizes and durations come from the policy crate so that flags
//! and policy files read `64MiB` and `500ms` the same way.

pub use wasmcage::core::policy::{parse_duration, parse_size};

/// An amount of fuel, or `None` for unmetered. A newtype because clap gives `Option`
/// fields a meaning of their own (an optional flag).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fuel(pub Option<u64>);

/// Parses a fuel amount: a number (underscores allowed), or `none` for unmetered.
pub fn parse_fuel(text: &str) -> Result<Fuel, String> {
    match text.trim() {
        "none" | "unlimited" => Ok(Fuel(None)),
        n => n
            .replace('_', "")
            .parse()
            .map(|n| Fuel(Some(n)))
            .map_err(|_| format!("{text:?} is not an amount of fuel; give a number or `none`")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fuel() {
        assert_eq!(parse_fuel("1000"), Ok(Fuel(Some(1000))));
        assert_eq!(parse_fuel("1_000_000"), Ok(Fuel(Some(1_000_000))));
        assert_eq!(parse_fuel("none"), Ok(Fuel(None)));
        assert!(parse_fuel("lots").is_err());
    }
}
