//! End-to-end behaviour of the sandbox, one module per topic.

mod alerting;
mod cache;
mod common;
mod fuzz;
mod health;
mod hostile;
mod interactive;
mod limits;
mod metrics;
mod outcomes;
mod policy;
mod pool;
mod runtimes;
mod tidy;
mod traces;
mod wasi;
