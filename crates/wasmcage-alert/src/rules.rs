//! Alert rules and their configuration file.

use std::collections::BTreeMap;
use std::path::PathBuf;
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

/// The longest window a condition may look back over. The engine keeps at most
/// [`MAX_WINDOW_SAMPLES`] samples per window whatever its length, so this bounds how coarse
/// the window's start may be (a 24 h window is resolved to about 84 s), not memory.
pub const MAX_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// The most samples the engine keeps for one window of one rule. Samples closer together than
/// `window / MAX_WINDOW_SAMPLES` are not kept, so evaluating more often does not grow memory.
pub const MAX_WINDOW_SAMPLES: usize = 1024;

/// What a threshold compares: the metric's value, or a counter's growth over a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    /// The value as read: a gauge, or a counter's total since the process started.
    Value,
    /// How much the counter grew within the window, like Prometheus `increase(m[window])`. A
    /// drop in the value is taken as a counter reset (the new value counts as growth).
    Increase(Duration),
    /// The counter's average growth per second over the window, like Prometheus
    /// `rate(m[window])`: the increase divided by the window's length in seconds.
    Rate(Duration),
}

impl Function {
    /// The window, for `Increase` and `Rate`.
    pub fn window(self) -> Option<Duration> {
        match self {
            Function::Value => None,
            Function::Increase(w) | Function::Rate(w) => Some(w),
        }
    }
}

/// When a rule is active.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// A metric (its value, or its growth over a window) compared with a threshold, held for
    /// `for_` before firing.
    Threshold {
        /// The metric.
        metric: MetricRef,
        /// What is compared: the value, or its increase or rate over a window.
        function: Function,
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

/// The most steps an escalation policy may have.
pub const MAX_ESCALATION_STEPS: usize = 16;

/// Named, ordered escalation steps that rules share: each step's channels are notified when
/// the alert has been firing, unacknowledged, for the step's `after`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EscalationPolicy {
    /// The steps, by strictly increasing `after`.
    pub steps: Vec<Escalation>,
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
    /// One escalation step when nobody acknowledges (the short form of a policy).
    pub escalation: Option<Escalation>,
    /// The name of an escalation policy in [`AlertConfig::escalation_policies`]; a rule has
    /// this or `escalation`, not both.
    pub escalation_policy: Option<String>,
    /// Disabled rules are not evaluated.
    pub enabled: bool,
    /// When the rule is active.
    pub condition: Condition,
}

impl Rule {
    /// The escalation steps in force for this rule: its policy's, its single `escalation`, or
    /// none. An unknown policy name (which validation refuses) gives none.
    pub fn escalation_steps<'a>(&'a self, config: &'a AlertConfig) -> &'a [Escalation] {
        match (&self.escalation_policy, &self.escalation) {
            (Some(policy), _) => config
                .escalation_policies
                .get(policy)
                .map_or(&[], |p| p.steps.as_slice()),
            (None, Some(step)) => std::slice::from_ref(step),
            (None, None) => &[],
        }
    }
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
    /// The outbox file (a redb database): every notification is written there before it is
    /// sent and removed when delivered or given up on, so a restarted process delivers what
    /// a killed one had not. `None` (the default) keeps the queues in memory only.
    pub outbox: Option<PathBuf>,
    /// Notifications one channel may have waiting (default 10 000). Past that, new ones for
    /// the channel are dropped and counted, so a dead receiver cannot grow memory or the
    /// outbox without bound.
    pub max_pending: usize,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            timeout: Duration::from_secs(5),
            max_attempts: 8,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(60),
            outbox: None,
            max_pending: 10_000,
        }
    }
}

/// A PagerDuty event severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PagerDutySeverity {
    /// `critical`
    Critical,
    /// `error`
    Error,
    /// `warning`
    Warning,
    /// `info`
    Info,
}

impl PagerDutySeverity {
    /// The name PagerDuty expects.
    pub fn as_str(self) -> &'static str {
        match self {
            PagerDutySeverity::Critical => "critical",
            PagerDutySeverity::Error => "error",
            PagerDutySeverity::Warning => "warning",
            PagerDutySeverity::Info => "info",
        }
    }
}

/// Which PagerDuty severity each rule severity is sent as. The default maps each to the
/// PagerDuty severity of the same name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeverityMap {
    /// For `critical` rules.
    pub critical: PagerDutySeverity,
    /// For `warning` rules.
    pub warning: PagerDutySeverity,
    /// For `info` rules.
    pub info: PagerDutySeverity,
}

impl Default for SeverityMap {
    fn default() -> Self {
        SeverityMap {
            critical: PagerDutySeverity::Critical,
            warning: PagerDutySeverity::Warning,
            info: PagerDutySeverity::Info,
        }
    }
}

impl SeverityMap {
    /// The PagerDuty severity for a rule severity.
    pub fn get(&self, severity: Severity) -> PagerDutySeverity {
        match severity {
            Severity::Critical => self.critical,
            Severity::Warning => self.warning,
            Severity::Info => self.info,
        }
    }
}

/// PagerDuty's Events API v2 endpoint, the default URL of a `pagerduty` channel.
pub const PAGERDUTY_EVENTS_URL: &str = "https://events.pagerduty.com/v2/enqueue";

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
    /// PagerDuty's Events API v2: `trigger` when firing, `resolve` when resolved, one
    /// `dedup_key` per alert instance.
    PagerDuty {
        /// The events endpoint ([`PAGERDUTY_EVENTS_URL`] unless set, e.g. for tests).
        url: String,
        /// The integration's routing key.
        routing_key: String,
        /// Which PagerDuty severity each rule severity becomes.
        severity: SeverityMap,
    },
}

impl ChannelConfig {
    /// Where the channel sends.
    pub fn url(&self) -> &str {
        match self {
            ChannelConfig::Slack { url }
            | ChannelConfig::Webhook { url, .. }
            | ChannelConfig::Alertmanager { url }
            | ChannelConfig::PagerDuty { url, .. } => url,
        }
    }
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
    /// Escalation policies by name, for rules' `escalation_policy`.
    pub escalation_policies: BTreeMap<String, EscalationPolicy>,
    /// The rules, in order.
    pub rules: Vec<Rule>,
}

/// The longest a rule, channel or escalation policy name may be. Names go into idempotency
/// keys, PagerDuty's `dedup_key` (at most 255 bytes) and URL paths.
pub const MAX_NAME_LEN: usize = 128;

/// The longest a rule's description may be, in bytes. It is in every notification, and the
/// outbox stores each notification until it is delivered.
pub const MAX_DESCRIPTION_LEN: usize = 4096;

/// Checks a rule, channel or policy name: 1 to [`MAX_NAME_LEN`] ASCII letters, digits, `_`,
/// `-` or `.`, so that it is safe in an HTTP header, a URL path and an idempotency key.
fn check_name(what: &str, name: &str) -> Result<(), AlertError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(AlertError::Config(format!(
            "{what} {name:?}: a name is 1 to {MAX_NAME_LEN} ASCII letters, digits, `_`, `-` or `.`"
        )))
    }
}

/// Checks that `d` is longer than zero and at most `max`.
fn check_duration(key: &str, d: Duration, max: Duration) -> Result<(), AlertError> {
    if d.is_zero() || d > max {
        return Err(AlertError::Config(format!(
            "{key}: {d:?} is out of range; use more than zero and at most {max:?}"
        )));
    }
    Ok(())
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

    /// Checks what a configuration built in code refers to, and that every value is within
    /// its bounds.
    pub fn validate(&self, metric_exists: &dyn Fn(&str) -> bool) -> Result<(), AlertError> {
        check_duration(
            "evaluation.interval",
            self.interval,
            Duration::from_secs(3600),
        )?;
        self.delivery.validate()?;
        for (name, channel) in &self.channels {
            check_name("channel", name)?;
            validate_channel(name, channel)?;
        }
        let known_channels = || {
            self.channels
                .keys()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let check_channels = |at: &str, channels: &[String]| -> Result<(), AlertError> {
            if channels.is_empty() {
                return Err(AlertError::Config(format!(
                    "{at}: at least one channel is needed"
                )));
            }
            for channel in channels {
                if !self.channels.contains_key(channel) {
                    return Err(AlertError::Config(format!(
                        "{at}: unknown channel {channel:?} (configured: {})",
                        known_channels()
                    )));
                }
            }
            Ok(())
        };
        let check_steps = |at: &str, steps: &[Escalation]| -> Result<(), AlertError> {
            if steps.is_empty() || steps.len() > MAX_ESCALATION_STEPS {
                return Err(AlertError::Config(format!(
                    "{at}: a policy has 1 to {MAX_ESCALATION_STEPS} steps"
                )));
            }
            let mut previous = Duration::ZERO;
            for (i, step) in steps.iter().enumerate() {
                let at = format!("{at}[{i}]");
                check_duration(&format!("{at}.after"), step.after, MAX_WINDOW * 7)?;
                if i > 0 && step.after <= previous {
                    return Err(AlertError::Config(format!(
                        "{at}.after: steps must come in order of strictly increasing `after` \
                         ({:?} follows {previous:?})",
                        step.after
                    )));
                }
                previous = step.after;
                check_channels(&format!("{at}.channels"), &step.channels)?;
            }
            Ok(())
        };
        for (name, policy) in &self.escalation_policies {
            check_name("escalation policy", name)?;
            check_steps(&format!("escalation_policies.{name}.steps"), &policy.steps)?;
        }
        let mut seen = std::collections::BTreeSet::new();
        for rule in &self.rules {
            check_name("rule", &rule.name)?;
            let at = |what: &str| format!("rules[{}].{what}", rule.name);
            if !seen.insert(&rule.name) {
                return Err(AlertError::Config(format!(
                    "rule name {:?} is used twice",
                    rule.name
                )));
            }
            if rule.description.len() > MAX_DESCRIPTION_LEN {
                return Err(AlertError::Config(format!(
                    "{}: longer than {MAX_DESCRIPTION_LEN} bytes",
                    at("description")
                )));
            }
            if rule.channels.is_empty() {
                return Err(AlertError::Config(format!(
                    "{}: a rule needs at least one channel",
                    at("channels")
                )));
            }
            check_channels(&at("channels"), &rule.channels)?;
            if let Some(every) = rule.repeat_interval {
                check_duration(&at("repeat_interval"), every, MAX_WINDOW * 7)?;
            }
            match (&rule.escalation_policy, &rule.escalation) {
                (Some(_), Some(_)) => {
                    return Err(AlertError::Config(format!(
                        "{}: a rule has `escalation` or `escalation_policy`, not both",
                        at("escalation_policy")
                    )));
                }
                (Some(policy), None) if !self.escalation_policies.contains_key(policy) => {
                    let known: Vec<&str> = self
                        .escalation_policies
                        .keys()
                        .map(String::as_str)
                        .collect();
                    return Err(AlertError::Config(format!(
                        "{}: unknown escalation policy {policy:?} (configured: {})",
                        at("escalation_policy"),
                        known.join(", ")
                    )));
                }
                (None, Some(step)) => check_steps(&at("escalation"), std::slice::from_ref(step))?,
                _ => {}
            }
            self.validate_condition(rule, &at("condition"))?;
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

    fn validate_condition(&self, rule: &Rule, at: &str) -> Result<(), AlertError> {
        let finite = |key: &str, v: f64| {
            if v.is_finite() {
                Ok(())
            } else {
                Err(AlertError::Config(format!(
                    "{at}.{key}: {v} is not a number"
                )))
            }
        };
        let window = |w: Duration| -> Result<(), AlertError> {
            check_duration(&format!("{at}.window"), w, MAX_WINDOW)?;
            if w < self.interval {
                return Err(AlertError::Config(format!(
                    "{at}.window: {w:?} is shorter than evaluation.interval ({:?}); a window \
                     must span at least one evaluation",
                    self.interval
                )));
            }
            Ok(())
        };
        let hold = |d: Duration| check_duration(&format!("{at}.for"), d, MAX_WINDOW * 7);
        match &rule.condition {
            Condition::Threshold {
                function,
                threshold,
                for_,
                ..
            } => {
                finite("threshold", *threshold)?;
                if let Some(w) = function.window() {
                    window(w)?;
                }
                if !for_.is_zero() {
                    hold(*for_)?;
                }
            }
            Condition::HealthFailures { check, .. } => {
                if check.is_empty() {
                    return Err(AlertError::Config(format!("{at}.check: empty")));
                }
            }
            Condition::ErrorRate {
                window: w,
                percent,
                for_,
            } => {
                finite("percent", *percent)?;
                window(*w)?;
                if !for_.is_zero() {
                    hold(*for_)?;
                }
            }
            Condition::ResourceUsage { percent, for_, .. } => {
                finite("percent", *percent)?;
                if !for_.is_zero() {
                    hold(*for_)?;
                }
            }
        }
        Ok(())
    }
}

impl DeliveryConfig {
    /// Checks that every value is within its bounds: attempts time out, retries back off, and
    /// queues are bounded.
    pub fn validate(&self) -> Result<(), AlertError> {
        check_duration("delivery.timeout", self.timeout, Duration::from_secs(300))?;
        if !(1..=1000).contains(&self.max_attempts) {
            return Err(AlertError::Config(format!(
                "delivery.max_attempts: {} is out of range; use 1 to 1000",
                self.max_attempts
            )));
        }
        check_duration(
            "delivery.initial_backoff",
            self.initial_backoff,
            Duration::from_secs(3600),
        )?;
        check_duration(
            "delivery.max_backoff",
            self.max_backoff,
            Duration::from_secs(3600),
        )?;
        if self.max_backoff < self.initial_backoff {
            return Err(AlertError::Config(format!(
                "delivery.max_backoff ({:?}) is shorter than delivery.initial_backoff ({:?})",
                self.max_backoff, self.initial_backoff
            )));
        }
        if !(1..=1_000_000).contains(&self.max_pending) {
            return Err(AlertError::Config(format!(
                "delivery.max_pending: {} is out of range; use 1 to 1000000",
                self.max_pending
            )));
        }
        if self
            .outbox
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty())
        {
            return Err(AlertError::Config(
                "delivery.outbox: empty path; leave it out to keep notifications in memory".into(),
            ));
        }
        Ok(())
    }
}

fn validate_channel(name: &str, channel: &ChannelConfig) -> Result<(), AlertError> {
    let url = channel.url();
    let parsed = reqwest::Url::parse(url).ok();
    if !parsed
        .as_ref()
        .is_some_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
    {
        return Err(AlertError::Config(format!(
            "channels.{name}.url: {url:?} is not an http(s) URL"
        )));
    }
    match channel {
        ChannelConfig::Webhook { headers, .. } => {
            for (header, value) in headers {
                let bad_name = reqwest::header::HeaderName::from_bytes(header.as_bytes()).is_err();
                let bad_value = reqwest::header::HeaderValue::from_str(value).is_err();
                if bad_name || bad_value {
                    return Err(AlertError::Config(format!(
                        "channels.{name}.headers.{header}: not a valid HTTP header {}",
                        if bad_name { "name" } else { "value" }
                    )));
                }
            }
        }
        ChannelConfig::PagerDuty { routing_key, .. } => {
            let ok = !routing_key.is_empty()
                && routing_key.len() <= 128
                && routing_key.bytes().all(|b| b.is_ascii_graphic());
            if !ok {
                return Err(AlertError::Config(format!(
                    "channels.{name}.routing_key: give the integration's routing key \
                     (1 to 128 printable ASCII characters)"
                )));
            }
        }
        ChannelConfig::Slack { .. } | ChannelConfig::Alertmanager { .. } => {}
    }
    Ok(())
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
    escalation_policies: BTreeMap<String, FileEscalationPolicy>,
    #[serde(default)]
    rules: Vec<FileRule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileEscalationPolicy {
    steps: Vec<FileEscalation>,
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
    outbox: Option<PathBuf>,
    max_pending: Option<usize>,
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
    #[serde(rename = "pagerduty")]
    PagerDuty {
        url: Option<String>,
        routing_key: Option<String>,
        #[serde(default)]
        severity: FileSeverityMap,
    },
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileSeverityMap {
    critical: Option<PagerDutySeverity>,
    warning: Option<PagerDutySeverity>,
    info: Option<PagerDutySeverity>,
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
    escalation_policy: Option<String>,
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
        function: Option<String>,
        window: Option<String>,
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
            outbox: self.delivery.outbox,
            max_pending: self.delivery.max_pending.unwrap_or(d.max_pending),
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
                FileChannel::PagerDuty {
                    url,
                    routing_key,
                    severity,
                } => {
                    let d = SeverityMap::default();
                    ChannelConfig::PagerDuty {
                        url: url.unwrap_or_else(|| PAGERDUTY_EVENTS_URL.to_owned()),
                        routing_key: routing_key.ok_or_else(|| {
                            AlertError::Config(format!("channels.{name}: missing `routing_key`"))
                        })?,
                        severity: SeverityMap {
                            critical: severity.critical.unwrap_or(d.critical),
                            warning: severity.warning.unwrap_or(d.warning),
                            info: severity.info.unwrap_or(d.info),
                        },
                    }
                }
            };
            channels.insert(name, channel);
        }
        let mut escalation_policies = BTreeMap::new();
        for (name, policy) in self.escalation_policies {
            let mut steps = Vec::new();
            for (i, step) in policy.steps.into_iter().enumerate() {
                steps.push(Escalation {
                    after: duration(
                        &format!("escalation_policies.{name}.steps[{i}].after"),
                        Some(step.after),
                        Duration::ZERO,
                    )?,
                    channels: step.channels,
                });
            }
            escalation_policies.insert(name, EscalationPolicy { steps });
        }
        let mut rules = Vec::new();
        for rule in self.rules {
            let key = |what: &str| format!("rules[{}].{what}", rule.name);
            let condition = match rule.condition {
                FileCondition::Threshold {
                    metric,
                    labels,
                    function,
                    window,
                    op,
                    threshold,
                    for_,
                } => Condition::Threshold {
                    metric: MetricRef {
                        name: metric,
                        labels,
                    },
                    function: threshold_function(&key("condition"), function, window)?,
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
                escalation_policy: rule.escalation_policy,
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
            escalation_policies,
            rules,
        })
    }
}

/// A threshold's `function` and `window` keys: both absent (the value), or `increase` or
/// `rate` with a window.
fn threshold_function(
    at: &str,
    function: Option<String>,
    window: Option<String>,
) -> Result<Function, AlertError> {
    let window = match window {
        None => None,
        Some(text) => Some(
            parse_duration(&text).map_err(|e| AlertError::Config(format!("{at}.window: {e}")))?,
        ),
    };
    match (function.as_deref(), window) {
        (None | Some("value"), None) => Ok(Function::Value),
        (None | Some("value"), Some(_)) => Err(AlertError::Config(format!(
            "{at}.window: a window needs `function = \"increase\"` or `function = \"rate\"`"
        ))),
        (Some("increase"), Some(w)) => Ok(Function::Increase(w)),
        (Some("rate"), Some(w)) => Ok(Function::Rate(w)),
        (Some(f @ ("increase" | "rate")), None) => Err(AlertError::Config(format!(
            "{at}.window: `function = \"{f}\"` needs a window, e.g. `window = \"5m\"`"
        ))),
        (Some(other), _) => Err(AlertError::Config(format!(
            "{at}.function: {other:?} is not a function; use \"value\", \"increase\" or \"rate\""
        ))),
    }
}
