//! Alerting for wasmcage: rules over metrics and health, and notifiers that retry.
//!
//! An [`AlertEngine`] evaluates [`Rule`]s, reading values through the [`AlertSource`] trait
//! (the facade implements it over the Prometheus registry and the health monitor; this crate
//! depends on neither), and keeps each rule's state: inactive, pending, firing, resolved.
//! Thresholds compare a value or a counter's increase or rate over a window. A firing alert
//! is notified once, re-notified on its repeat interval, escalated step by step (an
//! [`EscalationPolicy`]) until someone acknowledges it ([`AlertEngine::acknowledge`]), and
//! notified again when it resolves; [`AlertEngine::active_alerts`] lists what is pending or
//! firing. The [`Dispatcher`] writes each notification to an [`Outbox`] (a redb file, or
//! memory) before delivering it to Slack, a generic webhook, Alertmanager or PagerDuty, each
//! channel on its own queue, retrying with exponential backoff and jitter; after a crash, the
//! next start delivers what the outbox still holds, under the same idempotency keys.

mod engine;
mod notify;
mod outbox;
mod rules;

pub use engine::{
    AcknowledgeError, ActiveAlert, AlertEngine, AlertSource, Clock, ManualClock, RuleState,
    SystemClock, spawn_evaluation,
};
pub use notify::{
    AlertmanagerNotifier, DeliveryCounts, DeliveryError, DeliveryListener, DeliveryResult,
    DeliveryStats, Dispatcher, Notification, NotificationStatus, Notifier, PagerDutyNotifier,
    SlackNotifier, WEBHOOK_SCHEMA_VERSION, WebhookNotifier, alertmanager_body, http_client,
    pagerduty_body, rfc3339, sign, slack_body, webhook_body,
};
pub use outbox::{DeadLetter, MAX_DEAD_LETTERS, Outbox, OutboxError};
pub use rules::{
    AlertConfig, ChannelConfig, Condition, DeliveryConfig, Escalation, EscalationPolicy, Function,
    MAX_DESCRIPTION_LEN, MAX_ESCALATION_STEPS, MAX_NAME_LEN, MAX_WINDOW, MAX_WINDOW_SAMPLES,
    MetricRef, Operator, PAGERDUTY_EVENTS_URL, PagerDutySeverity, Rule, Severity, SeverityMap,
    parse_duration,
};

/// The execution counter error-rate rules read.
pub const EXECUTIONS_METRIC: &str = "wasmcage_executions_total";

/// The counter of commands that exited, by `status` (`zero` or `nonzero`): a nonzero exit
/// counts as a failure in an error rate.
pub const COMMAND_EXITS_METRIC: &str = "wasmcage_command_exits_total";

/// The `module` label of the health canary's executions, which error rates leave out.
pub const CANARY_MODULE: &str = "canary";

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
    /// The outbox file could not be opened or used.
    #[error(transparent)]
    Outbox(#[from] OutboxError),
}
