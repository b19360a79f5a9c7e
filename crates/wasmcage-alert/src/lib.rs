//! Alerting for wasmcage: rules over metrics and health, and notifiers that retry.
//!
//! An [`AlertEngine`] evaluates [`Rule`]s, reading values through the [`AlertSource`] trait
//! (the facade implements it over the Prometheus registry and the health monitor; this crate
//! depends on neither), and keeps each rule's state: inactive, pending, firing, resolved. A
//! firing alert is notified once, re-notified on its repeat interval, escalated to more
//! channels when nobody acknowledges it, and notified again when it resolves. The
//! [`Dispatcher`] delivers notifications to Slack, a generic webhook or Alertmanager, each
//! channel on its own queue, retrying with exponential backoff and jitter.

mod engine;
mod notify;
mod rules;

pub use engine::{
    AlertEngine, AlertSource, Clock, ManualClock, RuleState, SystemClock, spawn_evaluation,
};
pub use notify::{
    AlertmanagerNotifier, DeliveryCounts, DeliveryError, DeliveryListener, DeliveryResult,
    DeliveryStats, Dispatcher, Notification, NotificationStatus, Notifier, SlackNotifier,
    WEBHOOK_SCHEMA_VERSION, WebhookNotifier, alertmanager_body, http_client, rfc3339, sign,
    slack_body, webhook_body,
};
pub use rules::{
    AlertConfig, ChannelConfig, Condition, DeliveryConfig, Escalation, MetricRef, Operator, Rule,
    Severity, parse_duration,
};

/// The execution counter error-rate rules read.
pub const EXECUTIONS_METRIC: &str = "wasmcage_executions_total";

/// The outcomes that count as failures in an error rate.
pub const FAILED_OUTCOMES: &[&str] = &[
    "out_of_fuel",
    "timeout",
    "memory_limit",
    "stack_overflow",
    "trap",
];

/// An error in the alerting configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AlertError {
    /// The configuration is invalid; the message names the key and the reason.
    #[error("invalid alerting configuration: {0}")]
    Config(String),
}
