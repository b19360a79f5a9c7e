//! Alert rules and their configuration file.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::AlertError;

/// How urgent an alert is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Someone must act now.
    Critical,
    /// Someone should look soon.
    Warning,
    /// For the record.
    Info,
}

impl Severity {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }
}

/// A comparison between a value and a threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `==`
    Eq,
}

impl Operator {
    /// Parses `>`, `>=`, `<`, `<=` or `==`.
    pub fn parse(text: &str) -> Result<Self, String> {
        Ok(match text.trim() {
            ">" => Operator::Gt,
            ">=" => Operator::Ge,
            "<" => Operator::Lt,
            "<=" => Operator::Le,
            "==" => Operator::Eq,
            other => {
                return Err(format!(
                    "{other:?} is not an operator; use >, >=, <, <= or =="
                ));
            }
        })
    }

    /// Whether `value <op> threshold` holds.
    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Operator::Gt => value > threshold,
            Operator::Ge => value >= threshold,
            Operator::Lt => value < threshold,
            Operator::Le => value <= threshold,
            Operator::Eq => value == threshold,
        }
    }
}

/// A metric and label matchers: the sum of every series of `name` whose labels include all
/// of `labels`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricRef {
    /// The metric's name (for histograms, `_sum`, `_count` or `_bucket`).
    pub name: String,
    /// Labels a series must carry, with these values.
    pub labels: BTreeMap<String, String>,
}

/// When a rule is active.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// A metric compared with a threshold, held for `for_` before firing.
    Threshold {
        /// The metric.
        metric: MetricRef,
        /// The comparison.
        op: Operator,
        /// The threshold.
        threshold: f64,
        /// How long the comparison must hold before the rule fires.
        for_: Duration,
    },
    /// A health check failing this many times in a row.
    HealthFailures {
        /// The check's name.
        check: String,
        /// Consecutive failures that fire the rule.
        consecutive: u32,
    },
    /// Failed executions as a percentage of all executions over a window, from the growth of
    /// the execution counters within the window (not their totals since start).
    ErrorRate {
        /// The window.
        window: Duration,
        /// The percentage at or above which the rule is active.
        percent: f64,
        /// How long it must stay active before the rule fires.
        for_: Duration,
    },
    /// One metric as a percentage of another (a usage against its limit), held for `for_`.
    ResourceUsage {
        /// The usage.
        usage: MetricRef,
        /// The limit.
        limit: MetricRef,
        /// The percentage at or above which the rule is active.
        percent: f64,
        /// How long it must stay active before the rule fires.
        for_: Duration,
    },
}

impl Condition {
    /// The metric names the condition reads, for validation against what exists.
    pub fn metrics(&self) -> Vec<&str> {
        match self {
            Condition::Threshold { metric, .. } => vec![&metric.name],
            Condition::HealthFailures { .. } => vec![],
            Condition::ErrorRate { .. } => vec![crate::EXECUTIONS_METRIC],
            Condition::ResourceUsage { usage, limit, .. } => vec![&usage.name, &limit.name],
        }
    }
}

/// Notify further channels when an alert stays firing, unacknowledged, this long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Escalation {
    /// How long after the alert started firing.
    pub after: Duration,
    /// The channels to add.
    pub channels: Vec<String>,
}

/// One alert rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// A unique name; also the `alertname` label.
    pub name: String,
    /// What it means and what to do, for the person paged.
    pub description: String,
    /// How urgent.
    pub severity: Severity,
    /// Where notifications go.
    pub channels: Vec<String>,
    /// Re-notify a still-firing alert this often; `None` notifies once.
    pub repeat_interval: Option<Duration>,
    /// Escalation when nobody acknowledges.
    pub escalation: Option<Escalation>,
    /// Disabled rules are not evaluated.
    pub enabled: bool,
    /// When the rule is active.
    pub condition: Condition,
}

/// How notifications are delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryConfig {
    /// Timeout of one attempt (default 5 s).
    pub timeout: Duration,
    /// Attempts before a retryable failure is given up (default 8).
    pub max_attempts: u32,
    /// The first retry's base delay (default 500 ms); it doubles each time, with jitter.
    pub initial_backoff: Duration,
    /// The largest delay between attempts (default 60 s), `Retry-After` included.
    pub max_backoff: Duration,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            timeout: Duration::from_secs(5),
            max_attempts: 8,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(60),
        }
    }
}

/// A notification channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelConfig {
    /// A Slack incoming webhook.
    Slack {
        /// The webhook URL.
        url: String,
    },
    /// A generic JSON webhook.
    Webhook {
        /// Where to POST.
        url: String,
        /// Shared secret for the `X-Wasmcage-Signature` HMAC-SHA256 header.
        secret: Option<String>,
        /// Extra headers on every request.
        headers: BTreeMap<String, String>,
    },
    /// An Alertmanager (`/api/v2/alerts` is appended to the base URL).
    Alertmanager {
        /// The Alertmanager's base URL, e.g. `http://127.0.0.1:9093`.
        url: String,
    },
}

/// Everything an alert engine needs: rules, channels, timing.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertConfig {
    /// How often rules are evaluated (default 15 s).
    pub interval: Duration,
    /// How notifications are delivered.
    pub delivery: DeliveryConfig,
    /// Channels by name.
    pub channels: BTreeMap<String, ChannelConfig>,
    /// The rules, in order.
    pub rules: Vec<Rule>,
}

impl AlertConfig {
    /// Parses and validates a TOML configuration. `metric_exists` says whether a metric name
    /// exists, so that a rule over a misspelt metric is rejected now rather than never firing.
    pub fn from_toml(text: &str, metric_exists: &dyn Fn(&str) -> bool) -> Result<Self, AlertError> {
        let file: FileConfig = toml::from_str(text)
            .map_err(|e| AlertError::Config(e.message().to_string() + &location(text, e.span())))?;
        let config = file.into_config()?;
        config.validate(metric_exists)?;
        Ok(config)
    }

    /// Checks what a configuration built in code refers to.
    pub fn validate(&self, metric_exists: &dyn Fn(&str) -> bool) -> Result<(), AlertError> {
        if self.interval.is_zero() {
            return Err(AlertError::Config(
                "evaluation.interval must be longer than zero".into(),
            ));
        }
        for (name, channel) in &self.channels {
            let url = match channel {
                ChannelConfig::Slack { url }
                | ChannelConfig::Webhook { url, .. }
                | ChannelConfig::Alertmanager { url } => url,
            };
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(AlertError::Config(format!(
                    "channels.{name}.url: {url:?} is not an http(s) URL"
                )));
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for rule in &self.rules {
            let at = |what: &str| format!("rules[{}].{what}", rule.name);
            if !seen.insert(&rule.name) {
                return Err(AlertError::Config(format!(
                    "rule name {:?} is used twice",
                    rule.name
                )));
            }
            if rule.channels.is_empty() {
                return Err(AlertError::Config(format!(
                    "{}: a rule needs at least one channel",
                    at("channels")
                )));
            }
            let escalation = rule.escalation.iter().flat_map(|e| &e.channels);
            for channel in rule.channels.iter().chain(escalation) {
                if !self.channels.contains_key(channel) {
                    let known: Vec<&str> = self.channels.keys().map(String::as_str).collect();
                    return Err(AlertError::Config(format!(
                        "{}: unknown channel {channel:?} (configured: {})",
                        at("channels"),
                        known.join(", ")
                    )));
                }
            }
            for metric in rule.condition.metrics() {
                if !metric_exists(metric) {
                    return Err(AlertError::Config(format!(
                        "{}: metric {metric:?} does not exist",
                        at("condition")
                    )));
                }
            }
        }
        Ok(())
    }
}

fn location(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    let Some(span) = span else {
        return String::new();
    };
    let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
    format!(" (line {line})")
}

// The file format. Kept apart from the public types so that those stay plain data.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    evaluation: FileEvaluation,
    #[serde(default)]
    delivery: FileDelivery,
    #[serde(default)]
    channels: BTreeMap<String, FileChannel>,
    #[serde(default)]
    rules: Vec<FileRule>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileEvaluation {
    interval: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileDelivery {
    timeout: Option<String>,
    max_attempts: Option<u32>,
    initial_backoff: Option<String>,
    max_backoff: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, tag = "type", rename_all = "lowercase")]
enum FileChannel {
    Slack {
        url: Option<String>,
    },
    Webhook {
        url: Option<String>,
        secret: Option<String>,
        #[serde(default)]
        headers: BTreeMap<String, String>,
    },
    Alertmanager {
        url: Option<String>,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRule {
    name: String,
    #[serde(default)]
    description: String,
    severity: Severity,
    channels: Vec<String>,
    repeat_interval: Option<String>,
    escalation: Option<FileEscalation>,
    #[serde(default = "yes")]
    enabled: bool,
    condition: FileCondition,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileEscalation {
    after: String,
    channels: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, tag = "type", rename_all = "snake_case")]
enum FileCondition {
    Threshold {
        metric: String,
        #[serde(default)]
        labels: BTreeMap<String, String>,
        op: String,
        threshold: f64,
        #[serde(rename = "for")]
        for_: Option<String>,
    },
    HealthFailures {
        check: String,
        consecutive: u32,
    },
    ErrorRate {
        window: String,
        percent: f64,
        #[serde(rename = "for")]
        for_: Option<String>,
    },
    ResourceUsage {
        usage: String,
        limit: String,
        #[serde(default)]
        labels: BTreeMap<String, String>,
        percent: f64,
        #[serde(rename = "for")]
        for_: Option<String>,
    },
}

pub use wasmcage_events::units::parse_duration;

impl FileConfig {
    fn into_config(self) -> Result<AlertConfig, AlertError> {
        let duration =
            |key: &str, text: Option<String>, default: Duration| -> Result<Duration, AlertError> {
                match text {
                    None => Ok(default),
                    Some(t) => {
                        parse_duration(&t).map_err(|e| AlertError::Config(format!("{key}: {e}")))
                    }
                }
            };
        let d = DeliveryConfig::default();
        let delivery = DeliveryConfig {
            timeout: duration("delivery.timeout", self.delivery.timeout, d.timeout)?,
            max_attempts: self.delivery.max_attempts.unwrap_or(d.max_attempts).max(1),
            initial_backoff: duration(
                "delivery.initial_backoff",
                self.delivery.initial_backoff,
                d.initial_backoff,
            )?,
            max_backoff: duration(
                "delivery.max_backoff",
                self.delivery.max_backoff,
                d.max_backoff,
            )?,
        };
        let mut channels = BTreeMap::new();
        for (name, channel) in self.channels {
            let missing = || AlertError::Config(format!("channels.{name}: missing `url`"));
            let channel = match channel {
                FileChannel::Slack { url } => ChannelConfig::Slack {
                    url: url.ok_or_else(missing)?,
                },
                FileChannel::Webhook {
                    url,
                    secret,
                    headers,
                } => ChannelConfig::Webhook {
                    url: url.ok_or_else(missing)?,
                    secret,
                    headers,
                },
                FileChannel::Alertmanager { url } => ChannelConfig::Alertmanager {
                    url: url.ok_or_else(missing)?,
                },
            };
            channels.insert(name, channel);
        }
        let mut rules = Vec::new();
        for rule in self.rules {
            let key = |what: &str| format!("rules[{}].{what}", rule.name);
            let condition = match rule.condition {
                FileCondition::Threshold {
                    metric,
                    labels,
                    op,
                    threshold,
                    for_,
                } => Condition::Threshold {
                    metric: MetricRef {
                        name: metric,
                        labels,
                    },
                    op: Operator::parse(&op)
                        .map_err(|e| AlertError::Config(format!("{}: {e}", key("condition.op"))))?,
                    threshold,
                    for_: duration(&key("condition.for"), for_, Duration::ZERO)?,
                },
                FileCondition::HealthFailures { check, consecutive } => Condition::HealthFailures {
                    check,
                    consecutive: consecutive.max(1),
                },
                FileCondition::ErrorRate {
                    window,
                    percent,
                    for_,
                } => Condition::ErrorRate {
                    window: duration(&key("condition.window"), Some(window), Duration::ZERO)?,
                    percent,
                    for_: duration(&key("condition.for"), for_, Duration::ZERO)?,
                },
                FileCondition::ResourceUsage {
                    usage,
                    limit,
                    labels,
                    percent,
                    for_,
                } => Condition::ResourceUsage {
                    usage: MetricRef {
                        name: usage,
                        labels: labels.clone(),
                    },
                    limit: MetricRef {
                        name: limit,
                        labels,
                    },
                    percent,
                    for_: duration(&key("condition.for"), for_, Duration::ZERO)?,
                },
            };
            let escalation = match rule.escalation {
                None => None,
                Some(e) => Some(Escalation {
                    after: duration(&key("escalation.after"), Some(e.after), Duration::ZERO)?,
                    channels: e.channels,
                }),
            };
            let repeat_interval = match rule.repeat_interval {
                None => None,
                Some(t) => Some(duration(&key("repeat_interval"), Some(t), Duration::ZERO)?),
            };
            rules.push(Rule {
                name: rule.name,
                description: rule.description,
                severity: rule.severity,
                channels: rule.channels,
                repeat_interval,
                escalation,
                enabled: rule.enabled,
                condition,
            });
        }
        Ok(AlertConfig {
            interval: duration(
                "evaluation.interval",
                self.evaluation.interval,
                Duration::from_secs(15),
            )?,
            delivery,
            channels,
            rules,
        })
    }
}
