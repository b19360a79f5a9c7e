//! Notifications, the [`Notifier`] trait with its Slack, webhook, Alertmanager and PagerDuty
//! implementations, and the [`Dispatcher`] that delivers through the outbox with retries.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;
use tokio::sync::mpsc;

use crate::AlertError;
use crate::outbox::{DeadLetter, Outbox, millis};
use crate::rules::{ChannelConfig, DeliveryConfig, Severity, SeverityMap};

/// The version of the generic webhook's JSON body. Fields are only ever added within a
/// version; a change that removes or renames one gets a new version.
pub const WEBHOOK_SCHEMA_VERSION: &str = "1";

/// Whether an alert fires or has resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotificationStatus {
    /// The condition holds.
    Firing,
    /// The condition no longer holds.
    Resolved,
}

impl NotificationStatus {
    /// `firing` or `resolved`.
    pub fn as_str(self) -> &'static str {
        match self {
            NotificationStatus::Firing => "firing",
            NotificationStatus::Resolved => "resolved",
        }
    }
}

/// One message about one alert, for one or more channels.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    /// The rule's name.
    pub rule: String,
    /// The rule's description.
    pub description: String,
    /// The rule's severity.
    pub severity: Severity,
    /// Firing or resolved.
    pub status: NotificationStatus,
    /// The value the condition last saw.
    pub value: f64,
    /// When the alert started firing.
    pub starts_at: SystemTime,
    /// When it resolved (resolved notifications only).
    pub ends_at: Option<SystemTime>,
    /// The channels it goes to.
    pub channels: Vec<String>,
    /// Unique per notification and stable across its retries and across restarts:
    /// `{rule}:{instance}:{step}` as the engine raises it. The [`Dispatcher`] gives each
    /// channel its own copy whose key also names the channel (see
    /// [`Notification::for_channel`]); receivers get that one as the `Idempotency-Key` header
    /// (and in the webhook body) and drop duplicates by it.
    pub idempotency_key: String,
    /// Which firing of the rule this is: `{firing number}-{start in Unix milliseconds}`,
    /// shared by the firing's notifications and its resolve (PagerDuty's `dedup_key` is
    /// `{rule}:{instance}`).
    pub instance: String,
    /// Which notification of the firing: `firing`, `repeat-N`, `escalation-N` or `resolved`.
    pub step: String,
    /// Which firing of the rule this is about (1 for the first since the process started).
    pub firing_number: u64,
}

impl Notification {
    /// The copy for one channel: `channels` is that channel alone and the idempotency key is
    /// `{rule}:{channel}:{instance}:{step}`.
    pub fn for_channel(&self, channel: &str) -> Notification {
        Notification {
            channels: vec![channel.to_owned()],
            idempotency_key: format!("{}:{channel}:{}:{}", self.rule, self.instance, self.step),
            ..self.clone()
        }
    }

    /// PagerDuty's `dedup_key`: one per alert instance, so that the resolve closes the
    /// incident the trigger opened and repeats and escalations join it.
    pub fn dedup_key(&self) -> String {
        format!("{}:{}", self.rule, self.instance)
    }
}

/// Why a delivery attempt failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    /// Worth retrying: a network error, a timeout, a 5xx or a 429.
    #[error("retryable: {reason}")]
    Retryable {
        /// What happened.
        reason: String,
        /// The receiver's `Retry-After`, when it sent one.
        retry_after: Option<Duration>,
    },
    /// Not worth retrying: the receiver refused the request (4xx other than 429).
    #[error("permanent: {reason}")]
    Permanent {
        /// What happened.
        reason: String,
    },
}

/// Something that delivers notifications to one place.
#[async_trait::async_trait]
pub trait Notifier: Send + Sync {
    /// Makes one delivery attempt.
    async fn send(&self, notification: &Notification) -> Result<(), DeliveryError>;
}

/// How one notification's delivery to one channel went, attempt by attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryResult {
    /// Delivered.
    Delivered,
    /// An attempt failed and will be retried.
    Retried,
    /// Given up: the receiver refused it.
    FailedPermanent,
    /// Given up: every attempt failed.
    FailedExhausted,
    /// Not queued: the channel already had `max_pending` notifications waiting.
    DroppedFull,
}

impl DeliveryResult {
    /// The snake_case name, as used in metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryResult::Delivered => "delivered",
            DeliveryResult::Retried => "retried",
            DeliveryResult::FailedPermanent => "failed_permanent",
            DeliveryResult::FailedExhausted => "failed_exhausted",
            DeliveryResult::DroppedFull => "dropped_full",
        }
    }
}

/// Told of every delivery result, for metrics. Called on the delivery task; must be cheap.
pub type DeliveryListener = Arc<dyn Fn(&str, DeliveryResult) + Send + Sync>;

/// Delivery counters, per channel and in total.
#[derive(Debug, Default)]
pub struct DeliveryStats {
    /// Notifications delivered.
    pub delivered: AtomicU64,
    /// Attempts that failed and were retried.
    pub retried: AtomicU64,
    /// Notifications given up on after a permanent failure.
    pub failed_permanent: AtomicU64,
    /// Notifications given up on after every attempt failed.
    pub failed_exhausted: AtomicU64,
    /// Notifications not queued because the channel's queue was full.
    pub dropped_full: AtomicU64,
}

/// A snapshot of [`DeliveryStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DeliveryCounts {
    /// Notifications delivered.
    pub delivered: u64,
    /// Attempts that failed and were retried.
    pub retried: u64,
    /// Notifications given up on after a permanent failure.
    pub failed_permanent: u64,
    /// Notifications given up on after every attempt failed.
    pub failed_exhausted: u64,
    /// Notifications not queued because the channel's queue was full.
    pub dropped_full: u64,
}

impl DeliveryStats {
    /// The counters now.
    pub fn counts(&self) -> DeliveryCounts {
        DeliveryCounts {
            delivered: self.delivered.load(Ordering::Relaxed),
            retried: self.retried.load(Ordering::Relaxed),
            failed_permanent: self.failed_permanent.load(Ordering::Relaxed),
            failed_exhausted: self.failed_exhausted.load(Ordering::Relaxed),
            dropped_full: self.dropped_full.load(Ordering::Relaxed),
        }
    }
}

/// Sends notifications to their channels. Each channel has its own queue and worker task, so a
/// slow or dead receiver delays only its own channel, never evaluation or other channels;
/// within a channel, notifications are delivered in the order they were sent.
///
/// Every notification is written to the [`Outbox`] before it is queued, and leaves it only
/// when delivered or given up on; a dispatcher started on an outbox that holds entries (left
/// by a process that was killed) delivers those first.
pub struct Dispatcher {
    channels: BTreeMap<String, Queue>,
    outbox: Arc<Outbox>,
    workers: Vec<tokio::task::JoinHandle<()>>,
    max_pending: usize,
}

/// One channel's queue.
struct Queue {
    tx: mpsc::UnboundedSender<Entry>,
    report: Arc<Report>,
    /// Entries queued and not yet finished; bounded by `max_pending`.
    pending: Arc<AtomicUsize>,
}

/// A notification addressed to one channel, with its outbox id (`None` when the outbox
/// write failed and it is delivered from memory only).
struct Entry {
    id: Option<u64>,
    notification: Notification,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("channels", &self.channels.keys().collect::<Vec<_>>())
            .field("outbox", &self.outbox)
            .finish()
    }
}

impl Dispatcher {
    /// Starts one worker per channel on the current tokio runtime, on the outbox that
    /// `delivery.outbox` names (in memory when `None`).
    pub fn start(
        channels: &BTreeMap<String, ChannelConfig>,
        delivery: &DeliveryConfig,
    ) -> Result<Self, AlertError> {
        Self::start_observed(channels, delivery, None)
    }

    /// [`Dispatcher::start`], telling `listener` of every delivery result.
    pub fn start_observed(
        channels: &BTreeMap<String, ChannelConfig>,
        delivery: &DeliveryConfig,
        listener: Option<DeliveryListener>,
    ) -> Result<Self, AlertError> {
        let client = http_client(delivery.timeout)?;
        let notifiers = channels
            .iter()
            .map(|(name, config)| (name.clone(), notifier(config, client.clone())))
            .collect();
        let outbox = match &delivery.outbox {
            Some(path) => Outbox::open(path)?,
            None => Outbox::in_memory(),
        };
        Self::with_outbox(notifiers, delivery, listener, outbox)
    }

    /// Stops this dispatcher's workers and starts one for `channels` and `delivery` on the
    /// same outbox, which stays open: how a reload of the alerting configuration changes
    /// channels without losing what waits. Whatever the old workers had not delivered is
    /// still in a durable outbox and is delivered again under its idempotency key (so a
    /// receiver may see a key twice; it deduplicates on it). A `delivery.outbox` other than
    /// this dispatcher's is refused: moving the outbox needs a restart.
    pub fn restart(
        &self,
        channels: &BTreeMap<String, ChannelConfig>,
        delivery: &DeliveryConfig,
        listener: Option<DeliveryListener>,
    ) -> Result<Self, AlertError> {
        if delivery.outbox.as_deref() != self.outbox.path() {
            return Err(AlertError::Config(
                "delivery.outbox cannot change while running; restart to move the outbox".into(),
            ));
        }
        let client = http_client(delivery.timeout)?;
        let notifiers = channels
            .iter()
            .map(|(name, config)| (name.clone(), notifier(config, client.clone())))
            .collect();
        self.stop();
        Self::start_on(notifiers, delivery, listener, self.outbox.clone())
    }

    /// Stops the workers at once. A notification they had not delivered stays in a durable
    /// outbox, for the next dispatcher on it.
    pub fn stop(&self) {
        for worker in &self.workers {
            worker.abort();
        }
    }

    /// Starts one worker per notifier, for notifiers of your own, with queues in memory.
    pub fn with_notifiers(
        notifiers: BTreeMap<String, Arc<dyn Notifier>>,
        delivery: &DeliveryConfig,
        listener: Option<DeliveryListener>,
    ) -> Self {
        Self::with_outbox(notifiers, delivery, listener, Outbox::in_memory())
            .expect("an in-memory outbox has nothing to load")
    }

    /// Starts one worker per notifier on `outbox`, first queueing what the outbox holds: each
    /// entry for a configured channel is delivered again under its idempotency key, and one
    /// for a channel that is no longer configured becomes a dead letter.
    pub fn with_outbox(
        notifiers: BTreeMap<String, Arc<dyn Notifier>>,
        delivery: &DeliveryConfig,
        listener: Option<DeliveryListener>,
        outbox: Outbox,
    ) -> Result<Self, AlertError> {
        Self::start_on(notifiers, delivery, listener, Arc::new(outbox))
    }

    fn start_on(
        notifiers: BTreeMap<String, Arc<dyn Notifier>>,
        delivery: &DeliveryConfig,
        listener: Option<DeliveryListener>,
        outbox: Arc<Outbox>,
    ) -> Result<Self, AlertError> {
        let mut channels = BTreeMap::new();
        let mut workers = Vec::new();
        for (name, notifier) in notifiers {
            let (tx, rx) = mpsc::unbounded_channel();
            let report = Arc::new(Report {
                channel: name.clone(),
                stats: Arc::new(DeliveryStats::default()),
                listener: listener.clone(),
            });
            let pending = Arc::new(AtomicUsize::new(0));
            let worker = Worker {
                notifier,
                delivery: delivery.clone(),
                report: report.clone(),
                outbox: outbox.clone(),
                pending: pending.clone(),
            };
            workers.push(tokio::spawn(worker.run(rx)));
            channels.insert(
                name.clone(),
                Queue {
                    tx,
                    report,
                    pending,
                },
            );
        }
        let mut recovered = 0;
        for (id, entry) in outbox.load()? {
            let channel = match &entry {
                Ok(n) => n.channels.first().cloned().unwrap_or_default(),
                Err(_) => String::new(),
            };
            match (entry, channels.get(&channel)) {
                (Ok(notification), Some(queue)) => {
                    queue.pending.fetch_add(1, Ordering::Relaxed);
                    let _ = queue.tx.send(Entry {
                        id: Some(id),
                        notification,
                    });
                    recovered += 1;
                }
                (entry, _) => {
                    let (key, reason) = match entry {
                        Ok(n) => (
                            n.idempotency_key,
                            format!("channel {channel:?} is no longer configured"),
                        ),
                        Err(e) => (String::new(), format!("unreadable outbox entry: {e}")),
                    };
                    tracing::warn!(channel, key, reason, "alert notification dropped at start");
                    outbox.bury(
                        Some(id),
                        DeadLetter {
                            channel,
                            idempotency_key: key,
                            reason,
                            failed_at_ms: millis(SystemTime::now()),
                        },
                    )?;
                }
            }
        }
        if recovered > 0 {
            tracing::info!(
                recovered,
                "alert notifications left in the outbox are being delivered"
            );
        }
        Ok(Dispatcher {
            channels,
            outbox,
            workers,
            max_pending: delivery.max_pending,
        })
    }

    /// Writes a copy of the notification for each of its channels to the outbox and queues
    /// it; never waits for delivery. The outbox write is synchronous (and, for a file, flushed
    /// to disk), so call this off the async workers (as [`crate::spawn_evaluation`] does).
    /// A channel whose queue already holds `max_pending` notifications drops the copy and
    /// counts it as [`DeliveryResult::DroppedFull`].
    pub fn send(&self, notification: Notification) {
        let mut seen = Vec::new();
        for channel in &notification.channels {
            if seen.contains(&channel) {
                continue;
            }
            seen.push(channel);
            let Some(queue) = self.channels.get(channel) else {
                continue;
            };
            if queue.pending.load(Ordering::Relaxed) >= self.max_pending {
                tracing::warn!(
                    channel,
                    key = notification.idempotency_key,
                    "alert notification dropped: the channel's queue is full"
                );
                queue.report.result(DeliveryResult::DroppedFull);
                continue;
            }
            let addressed = notification.for_channel(channel);
            let id = match self.outbox.put(&addressed) {
                Ok(id) => Some(id),
                Err(e) => {
                    // Deliver it anyway; it is only not durable.
                    tracing::error!(channel, error = %e, "alert outbox write failed");
                    None
                }
            };
            queue.pending.fetch_add(1, Ordering::Relaxed);
            // A closed queue means the runtime is shutting down; the entry stays in the
            // outbox for the next start.
            let _ = queue.tx.send(Entry {
                id,
                notification: addressed,
            });
        }
    }

    /// A channel's delivery counters.
    pub fn stats(&self, channel: &str) -> Option<DeliveryCounts> {
        self.channels.get(channel).map(|q| q.report.stats.counts())
    }

    /// How many notifications a channel has queued and not yet finished.
    pub fn pending(&self, channel: &str) -> Option<usize> {
        self.channels
            .get(channel)
            .map(|q| q.pending.load(Ordering::Relaxed))
    }

    /// The outbox.
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// The counters summed over every channel.
    pub fn total(&self) -> DeliveryCounts {
        self.channels
            .values()
            .map(|q| q.report.stats.counts())
            .fold(DeliveryCounts::default(), |a, b| DeliveryCounts {
                delivered: a.delivered + b.delivered,
                retried: a.retried + b.retried,
                failed_permanent: a.failed_permanent + b.failed_permanent,
                failed_exhausted: a.failed_exhausted + b.failed_exhausted,
                dropped_full: a.dropped_full + b.dropped_full,
            })
    }

    /// Stops accepting notifications and waits until every queued one is delivered or
    /// given up on.
    pub async fn drain(self) {
        drop(self.channels);
        for worker in self.workers {
            let _ = worker.await;
        }
    }
}

/// Counts a channel's delivery results and passes them to the listener.
struct Report {
    channel: String,
    stats: Arc<DeliveryStats>,
    listener: Option<DeliveryListener>,
}

impl Report {
    fn result(&self, result: DeliveryResult) {
        let counter = match result {
            DeliveryResult::Delivered => &self.stats.delivered,
            DeliveryResult::Retried => &self.stats.retried,
            DeliveryResult::FailedPermanent => &self.stats.failed_permanent,
            DeliveryResult::FailedExhausted => &self.stats.failed_exhausted,
            DeliveryResult::DroppedFull => &self.stats.dropped_full,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if let Some(listener) = &self.listener {
            listener(&self.channel, result);
        }
    }
}

/// Delivers one channel's queue, in order.
struct Worker {
    notifier: Arc<dyn Notifier>,
    delivery: DeliveryConfig,
    report: Arc<Report>,
    outbox: Arc<Outbox>,
    pending: Arc<AtomicUsize>,
}

impl Worker {
    async fn run(self, mut queue: mpsc::UnboundedReceiver<Entry>) {
        let mut jitter = Jitter::seeded();
        while let Some(entry) = queue.recv().await {
            let outcome = self.deliver(&entry.notification, &mut jitter).await;
            let channel = self.report.channel.clone();
            let key = entry.notification.idempotency_key.clone();
            let outbox = self.outbox.clone();
            // The outbox writes are synchronous disk I/O.
            let written = tokio::task::spawn_blocking(move || match outcome {
                Ok(()) => entry.id.map_or(Ok(()), |id| outbox.remove(id)),
                Err(reason) => outbox.bury(
                    entry.id,
                    DeadLetter {
                        channel,
                        idempotency_key: key,
                        reason,
                        failed_at_ms: millis(SystemTime::now()),
                    },
                ),
            })
            .await;
            if let Ok(Err(e)) = written {
                // The entry stays in the outbox and is delivered again at the next start,
                // under the same idempotency key.
                tracing::error!(channel = self.report.channel, error = %e, "alert outbox update failed");
            }
            self.pending.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Attempts until delivered (`Ok`) or given up on (`Err` with the reason).
    async fn deliver(
        &self,
        notification: &Notification,
        jitter: &mut Jitter,
    ) -> Result<(), String> {
        let delivery = &self.delivery;
        let mut attempt = 0;
        loop {
            attempt += 1;
            // The client's timeout bounds each attempt already; this one also bounds a
            // notifier of someone else's.
            let sent = tokio::time::timeout(delivery.timeout, self.notifier.send(notification))
                .await
                .unwrap_or_else(|_| {
                    Err(DeliveryError::Retryable {
                        reason: format!("timed out: no answer within {:?}", delivery.timeout),
                        retry_after: None,
                    })
                });
            match sent {
                Ok(()) => {
                    self.report.result(DeliveryResult::Delivered);
                    return Ok(());
                }
                Err(DeliveryError::Permanent { reason }) => {
                    tracing::warn!(
                        channel = self.report.channel,
                        key = notification.idempotency_key,
                        reason,
                        "alert notification refused by the receiver; not retried"
                    );
                    self.report.result(DeliveryResult::FailedPermanent);
                    return Err(reason);
                }
                Err(DeliveryError::Retryable {
                    reason,
                    retry_after,
                }) => {
                    if attempt >= delivery.max_attempts {
                        tracing::warn!(
                            channel = self.report.channel,
                            key = notification.idempotency_key,
                            attempts = attempt,
                            reason,
                            "alert notification given up on after its last attempt"
                        );
                        self.report.result(DeliveryResult::FailedExhausted);
                        return Err(format!("{attempt} attempts failed; the last: {reason}"));
                    }
                    self.report.result(DeliveryResult::Retried);
                    let exponential = delivery
                        .initial_backoff
                        .saturating_mul(1 << (attempt - 1).min(16));
                    // Full jitter: a random delay up to the exponential bound, so that many
                    // senders retrying together spread out.
                    let backoff = jitter.up_to(exponential.min(delivery.max_backoff));
                    let delay = retry_after
                        .map_or(backoff, |r| r.max(backoff))
                        .min(delivery.max_backoff);
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }
}

/// A small xorshift generator for retry jitter; not for anything secret.
struct Jitter(u64);

impl Jitter {
    fn seeded() -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u64;
        Jitter(nanos | 1)
    }

    fn up_to(&mut self, max: Duration) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        let fraction = (self.0 >> 11) as f64 / (1u64 << 53) as f64;
        max.mul_f64(fraction)
    }
}

/// An HTTP client with rustls on the ring provider and the platform's trust roots.
pub fn http_client(timeout: Duration) -> Result<reqwest::Client, AlertError> {
    // Installing the process-wide provider fails only if one is already installed, which is
    // what we want anyway.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .map_err(|e| AlertError::Config(format!("cannot build the HTTP client: {e}")))
}

fn notifier(config: &ChannelConfig, client: reqwest::Client) -> Arc<dyn Notifier> {
    match config {
        ChannelConfig::Slack { url } => Arc::new(SlackNotifier {
            url: url.clone(),
            client,
        }),
        ChannelConfig::Webhook {
            url,
            secret,
            headers,
        } => Arc::new(WebhookNotifier {
            url: url.clone(),
            secret: secret.clone(),
            headers: headers.clone(),
            client,
        }),
        ChannelConfig::Alertmanager { url } => Arc::new(AlertmanagerNotifier {
            url: format!("{}/api/v2/alerts", url.trim_end_matches('/')),
            client,
        }),
        ChannelConfig::PagerDuty {
            url,
            routing_key,
            severity,
        } => Arc::new(PagerDutyNotifier {
            url: url.clone(),
            routing_key: routing_key.clone(),
            severity: *severity,
            client,
        }),
    }
}

/// A JSON body as bytes.
fn json_bytes(value: &serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(value).expect("JSON values serialise")
}

/// POSTs a notification's JSON body, with its idempotency key and any extra headers, and
/// classifies the answer.
async fn post(
    client: &reqwest::Client,
    url: &str,
    n: &Notification,
    body: Vec<u8>,
    headers: &[(&str, String)],
) -> Result<(), DeliveryError> {
    let mut request = client
        .post(url)
        .header("content-type", "application/json")
        .header("idempotency-key", n.idempotency_key.as_str())
        .body(body);
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let response = request.send().await.map_err(|e| DeliveryError::Retryable {
        reason: if e.is_timeout() {
            format!("timed out: {e}")
        } else {
            format!("request failed: {e}")
        },
        retry_after: None,
    })?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let reason = format!("{url} answered {status}");
    if status.is_server_error() || status.as_u16() == 429 {
        Err(DeliveryError::Retryable {
            reason,
            retry_after,
        })
    } else {
        Err(DeliveryError::Permanent { reason })
    }
}

/// A Slack incoming webhook: one attachment coloured by severity.
#[derive(Debug)]
pub struct SlackNotifier {
    url: String,
    client: reqwest::Client,
}

impl SlackNotifier {
    /// A notifier posting to this webhook URL.
    pub fn new(url: impl Into<String>, client: reqwest::Client) -> Self {
        SlackNotifier {
            url: url.into(),
            client,
        }
    }
}

/// Slack's message body for a notification.
pub fn slack_body(n: &Notification) -> serde_json::Value {
    let color = match (n.status, n.severity) {
        (NotificationStatus::Resolved, _) => "#2eb886",
        (_, Severity::Critical) => "#d00000",
        (_, Severity::Warning) => "#f2c744",
        (_, Severity::Info) => "#439fe0",
    };
    let title = format!("[{}] {}", n.status.as_str().to_uppercase(), n.rule);
    let mut fields = vec![
        json!({"title": "Severity", "value": n.severity.as_str(), "short": true}),
        json!({"title": "Value", "value": format!("{}", n.value), "short": true}),
        json!({"title": "Started", "value": rfc3339(n.starts_at), "short": true}),
    ];
    if let Some(end) = n.ends_at {
        fields.push(json!({"title": "Resolved", "value": rfc3339(end), "short": true}));
    }
    json!({
        "text": title,
        "attachments": [{
            "color": color,
            "title": title,
            "text": n.description,
            "fields": fields,
            "footer": format!("wasmcage alert {}", n.idempotency_key),
            "ts": n.ends_at.unwrap_or(n.starts_at).duration_since(UNIX_EPOCH).unwrap_or_default().as_secs(),
        }]
    })
}

#[async_trait::async_trait]
impl Notifier for SlackNotifier {
    async fn send(&self, n: &Notification) -> Result<(), DeliveryError> {
        post(&self.client, &self.url, n, json_bytes(&slack_body(n)), &[]).await
    }
}

/// A generic JSON webhook, optionally signed.
#[derive(Debug)]
pub struct WebhookNotifier {
    url: String,
    secret: Option<String>,
    headers: BTreeMap<String, String>,
    client: reqwest::Client,
}

/// The generic webhook's body (schema version [`WEBHOOK_SCHEMA_VERSION`]).
pub fn webhook_body(n: &Notification) -> serde_json::Value {
    json!({
        "version": WEBHOOK_SCHEMA_VERSION,
        "status": n.status.as_str(),
        "rule": n.rule,
        "severity": n.severity.as_str(),
        "description": n.description,
        "value": n.value,
        "starts_at": rfc3339(n.starts_at),
        "ends_at": n.ends_at.map(rfc3339),
        "firing_number": n.firing_number,
        "idempotency_key": n.idempotency_key,
    })
}

/// `sha256=<hex>` of HMAC-SHA256 over `body` with `secret`: the `X-Wasmcage-Signature` value.
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    format!(
        "sha256={}",
        digest
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    )
}

#[async_trait::async_trait]
impl Notifier for WebhookNotifier {
    async fn send(&self, n: &Notification) -> Result<(), DeliveryError> {
        let body = json_bytes(&webhook_body(n));
        let mut headers: Vec<(&str, String)> = Vec::new();
        if let Some(secret) = &self.secret {
            headers.push(("x-wasmcage-signature", sign(secret, &body)));
        }
        headers.extend(self.headers.iter().map(|(k, v)| (k.as_str(), v.clone())));
        post(&self.client, &self.url, n, body, &headers).await
    }
}

/// Alertmanager's `/api/v2/alerts`.
#[derive(Debug)]
pub struct AlertmanagerNotifier {
    url: String,
    client: reqwest::Client,
}

/// Alertmanager's body for a notification: one alert with labels, annotations and times.
pub fn alertmanager_body(n: &Notification) -> serde_json::Value {
    let mut alert = json!({
        "labels": {"alertname": n.rule, "severity": n.severity.as_str(), "source": "wasmcage"},
        "annotations": {"description": n.description, "value": format!("{}", n.value)},
        "startsAt": rfc3339(n.starts_at),
    });
    if let Some(end) = n.ends_at {
        alert["endsAt"] = json!(rfc3339(end));
    }
    json!([alert])
}

#[async_trait::async_trait]
impl Notifier for AlertmanagerNotifier {
    async fn send(&self, n: &Notification) -> Result<(), DeliveryError> {
        post(
            &self.client,
            &self.url,
            n,
            json_bytes(&alertmanager_body(n)),
            &[],
        )
        .await
    }
}

/// PagerDuty's Events API v2.
#[derive(Debug)]
pub struct PagerDutyNotifier {
    url: String,
    routing_key: String,
    severity: SeverityMap,
    client: reqwest::Client,
}

impl PagerDutyNotifier {
    /// A notifier sending events with this routing key to this URL (normally
    /// [`crate::PAGERDUTY_EVENTS_URL`]).
    pub fn new(
        url: impl Into<String>,
        routing_key: impl Into<String>,
        severity: SeverityMap,
        client: reqwest::Client,
    ) -> Self {
        PagerDutyNotifier {
            url: url.into(),
            routing_key: routing_key.into(),
            severity,
            client,
        }
    }
}

/// The longest `payload.summary` PagerDuty accepts, in characters.
const PAGERDUTY_SUMMARY_MAX: usize = 1024;

/// PagerDuty's Events API v2 body for a notification: a `trigger` with a payload when firing,
/// a `resolve` when resolved, both with the alert instance's `dedup_key`.
pub fn pagerduty_body(
    n: &Notification,
    routing_key: &str,
    severity: &SeverityMap,
) -> serde_json::Value {
    if n.status == NotificationStatus::Resolved {
        return json!({
            "routing_key": routing_key,
            "event_action": "resolve",
            "dedup_key": n.dedup_key(),
        });
    }
    let summary: String = if n.description.is_empty() {
        n.rule.clone()
    } else {
        format!("{}: {}", n.rule, n.description)
    }
    .chars()
    .take(PAGERDUTY_SUMMARY_MAX)
    .collect();
    json!({
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": n.dedup_key(),
        "client": "wasmcage",
        "payload": {
            "summary": summary,
            "source": "wasmcage",
            "severity": severity.get(n.severity).as_str(),
            "timestamp": rfc3339(n.starts_at),
            "component": "wasmcage",
            "group": n.rule,
            "class": "alert",
            "custom_details": {
                "rule": n.rule,
                "description": n.description,
                "value": n.value,
                "step": n.step,
                "firing_number": n.firing_number,
                "idempotency_key": n.idempotency_key,
            },
        },
    })
}

#[async_trait::async_trait]
impl Notifier for PagerDutyNotifier {
    async fn send(&self, n: &Notification) -> Result<(), DeliveryError> {
        let body = pagerduty_body(n, &self.routing_key, &self.severity);
        post(&self.client, &self.url, n, json_bytes(&body), &[]).await
    }
}

/// RFC 3339 UTC with milliseconds, e.g. `2026-11-23T06:40:00.123Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        let check = |secs: u64, expected: &str| {
            assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_secs(secs)), expected);
        };
        check(0, "1970-01-01T00:00:00.000Z");
        check(951_782_400, "2000-02-29T00:00:00.000Z");
        check(1_795_419_245, "2026-11-23T07:34:05.000Z");
    }

    #[test]
    fn hmac_signature_matches_a_known_vector() {
        // RFC 4231, test case 2.
        assert_eq!(
            sign("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
