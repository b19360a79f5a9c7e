//! Typed values passed to and returned from exports.

use std::fmt;
use std::str::FromStr;

use crate::Error;

/// The type of a value an export takes or returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueType {
    /// 32-bit integer.
    I32,
    /// 64-bit integer.
    I64,
    /// 32-bit float.
    F32,
    /// 64-bit float.
    F64,
}

impl ValueType {
    pub(crate) fn from_wasmtime(ty: &wasmtime::ValType) -> Option<Self> {
        match ty {
            wasmtime::ValType::I32 => Some(ValueType::I32),
            wasmtime::ValType::I64 => Some(ValueType::I64),
            wasmtime::ValType::F32 => Some(ValueType::F32),
            wasmtime::ValType::F64 => Some(ValueType::F64),
            _ => None,
        }
    }
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ValueType::I32 => "i32",
            ValueType::I64 => "i64",
            ValueType::F32 => "f32",
            ValueType::F64 => "f64",
        })
    }
}

impl FromStr for ValueType {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "i32" => Ok(ValueType::I32),
            "i64" => Ok(ValueType::I64),
            "f32" => Ok(ValueType::F32),
            "f64" => Ok(ValueType::F64),
            other => Err(Error::BadValue {
                text: other.to_owned(),
                ty: None,
                reason: "expected one of i32, i64, f32, f64".to_owned(),
            }),
        }
    }
}

/// A value passed to or returned from an export.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    /// 32-bit integer.
    I32(i32),
    /// 64-bit integer.
    I64(i64),
    /// 32-bit float.
    F32(f32),
    /// 64-bit float.
    F64(f64),
}

impl Value {
    /// The type of this value.
    pub fn ty(&self) -> ValueType {
        match self {
            Value::I32(_) => ValueType::I32,
            Value::I64(_) => ValueType::I64,
            Value::F32(_) => ValueType::F32,
            Value::F64(_) => ValueType::F64,
        }
    }

    /// Parses `text` as a value of type `ty`: decimal integers (with an optional `0x` prefix
    /// for hex), and floats in Rust's notation including `inf` and `NaN`.
    pub fn parse(text: &str, ty: ValueType) -> Result<Value, Error> {
        let bad = |reason: String| Error::BadValue {
            text: text.to_owned(),
            ty: Some(ty),
            reason,
        };
        let t = text.trim();
        let int = |bits: u32| -> Result<i64, Error> {
            let (neg, digits) = match t.strip_prefix('-') {
                Some(rest) => (true, rest),
                None => (false, t.strip_prefix('+').unwrap_or(t)),
            };
            let digits = digits
                .strip_prefix("0x")
                .or_else(|| digits.strip_prefix("0X"))
                .map_or((digits, 10), |hex| (hex, 16));
            // One sign at most, and only in front: Rust's parsers accept a sign of their
            // own, which once read "--5" as 5 and "0x-5" as -5.
            if digits.0.starts_with(['+', '-']) {
                return Err(bad("a sign may only come first, once".to_owned()));
            }
            let magnitude =
                i128::from_str_radix(digits.0, digits.1).map_err(|e| bad(e.to_string()))?;
            let v = if neg { -magnitude } else { magnitude };
            // Accept the signed range and, for convenience, the unsigned range as bit patterns.
            let (min, max) = (-(1i128 << (bits - 1)), (1i128 << bits) - 1);
            if v < min || v > max {
                return Err(bad(format!("out of range for a {bits}-bit integer")));
            }
            Ok(v as i64)
        };
        Ok(match ty {
            ValueType::I32 => Value::I32(int(32)? as u32 as i32),
            ValueType::I64 => Value::I64(int(64)?),
            ValueType::F32 => Value::F32(
                t.parse()
                    .map_err(|e: std::num::ParseFloatError| bad(e.to_string()))?,
            ),
            ValueType::F64 => Value::F64(
                t.parse()
                    .map_err(|e: std::num::ParseFloatError| bad(e.to_string()))?,
            ),
        })
    }

    pub(crate) fn to_wasmtime(self) -> wasmtime::Val {
        match self {
            Value::I32(v) => wasmtime::Val::I32(v),
            Value::I64(v) => wasmtime::Val::I64(v),
            Value::F32(v) => wasmtime::Val::F32(v.to_bits()),
            Value::F64(v) => wasmtime::Val::F64(v.to_bits()),
        }
    }

    pub(crate) fn from_wasmtime(val: &wasmtime::Val) -> Option<Value> {
        match *val {
            wasmtime::Val::I32(v) => Some(Value::I32(v)),
            wasmtime::Val::I64(v) => Some(Value::I64(v)),
            wasmtime::Val::F32(bits) => Some(Value::F32(f32::from_bits(bits))),
            wasmtime::Val::F64(bits) => Some(Value::F64(f64::from_bits(bits))),
            _ => None,
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::I32(v) => write!(f, "{v}"),
            Value::I64(v) => write!(f, "{v}"),
            Value::F32(v) => write!(f, "{v}"),
            Value::F64(v) => write!(f, "{v}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, ty: ValueType, expected: Option<Value>) {
        let got = Value::parse(text, ty).ok();
        assert_eq!(got, expected, "parsing {text:?} as {ty}");
    }

    #[test]
    fn parses_each_type() {
        check("42", ValueType::I32, Some(Value::I32(42)));
        check("-7", ValueType::I32, Some(Value::I32(-7)));
        check("0xff", ValueType::I32, Some(Value::I32(255)));
        check("4294967295", ValueType::I32, Some(Value::I32(-1)));
        check("4294967296", ValueType::I32, None);
        check("-2147483649", ValueType::I32, None);
        check(
            "9223372036854775807",
            ValueType::I64,
            Some(Value::I64(i64::MAX)),
        );
        check("1.5", ValueType::F32, Some(Value::F32(1.5)));
        check("-2.25", ValueType::F64, Some(Value::F64(-2.25)));
        check("abc", ValueType::I32, None);
        check("+5", ValueType::I32, Some(Value::I32(5)));
        check("-0x5", ValueType::I64, Some(Value::I64(-5)));
        for twice in ["--5", "+-5", "-+5", "++5", "0x-5", "0x+5", "-0x-5", "0X-5"] {
            check(twice, ValueType::I32, None);
            check(twice, ValueType::I64, None);
        }
        check("1.5", ValueType::I64, None);
    }
}
