//! End-to-end tests of wasmcage live in `it/`; this library is empty on purpose.
