//! Turns what wasmtime returns into a classified [`Outcome`].

use wasmcage_events::{LimitKind, Outcome, TrapKind};
use wasmtime::Trap;
use wasmtime_wasi::I32Exit;

use crate::limits::LimitBreach;

/// The classified end of an execution that did not return normally.
pub(crate) struct Classified {
    pub(crate) outcome: Outcome,
    pub(crate) message: Option<String>,
}

/// Classifies an error from instantiation or a call.
///
/// Our own [`LimitBreach`] errors are checked first because they are exact; wasmtime's
/// [`Trap`] codes next; anything else is a host function that failed.
pub(crate) fn classify(err: &wasmtime::Error) -> Classified {
    if let Some(exit) = err.downcast_ref::<I32Exit>() {
        return Classified {
            outcome: Outcome::Exited(exit.0),
            message: None,
        };
    }
    let message = Some(chain(err));
    if err.downcast_ref::<crate::store::Cancelled>().is_some() {
        return Classified {
            outcome: Outcome::Cancelled,
            message,
        };
    }
    if let Some(breach) = err.downcast_ref::<LimitBreach>() {
        let outcome = match breach.kind {
            LimitKind::Memory => Outcome::MemoryLimit,
            LimitKind::Table => Outcome::Trap(TrapKind::TableLimit),
            LimitKind::Timeout => Outcome::Timeout,
            LimitKind::Fuel => Outcome::OutOfFuel,
            LimitKind::Stack => Outcome::StackOverflow,
            _ => Outcome::Trap(TrapKind::InstanceLimit),
        };
        return Classified {
            outcome,
            message: Some(breach.to_string()),
        };
    }
    if let Some(trap) = err.downcast_ref::<Trap>() {
        let outcome = match trap {
            Trap::OutOfFuel => Outcome::OutOfFuel,
            Trap::StackOverflow => Outcome::StackOverflow,
            Trap::Interrupt => Outcome::Timeout,
            Trap::UnreachableCodeReached => Outcome::Trap(TrapKind::Unreachable),
            Trap::MemoryOutOfBounds => Outcome::Trap(TrapKind::OutOfBounds),
            Trap::TableOutOfBounds => Outcome::Trap(TrapKind::TableOutOfBounds),
            Trap::IntegerDivisionByZero => Outcome::Trap(TrapKind::DivisionByZero),
            Trap::IntegerOverflow => Outcome::Trap(TrapKind::IntegerOverflow),
            Trap::BadConversionToInteger => Outcome::Trap(TrapKind::BadConversionToInteger),
            Trap::IndirectCallToNull => Outcome::Trap(TrapKind::IndirectCallToNull),
            Trap::BadSignature => Outcome::Trap(TrapKind::BadSignature),
            Trap::HeapMisaligned => Outcome::Trap(TrapKind::HeapMisaligned),
            Trap::NullReference => Outcome::Trap(TrapKind::NullReference),
            _ => Outcome::Trap(TrapKind::Other),
        };
        return Classified { outcome, message };
    }
    // wasmtime reports store-level count limits (instances, tables, memories) as a plain
    // error rather than through the limiter; its text is stable across releases.
    if message
        .as_deref()
        .is_some_and(|m| m.contains("resource limit exceeded"))
    {
        return Classified {
            outcome: Outcome::Trap(TrapKind::InstanceLimit),
            message,
        };
    }
    Classified {
        outcome: Outcome::Trap(TrapKind::Host),
        message,
    }
}

/// An error and its causes on one line, without the backtrace wasmtime's `Debug` adds.
pub(crate) fn chain(err: &wasmtime::Error) -> String {
    err.chain()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(": ")
}
