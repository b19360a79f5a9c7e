//! Kubernetes-style probes, independent of any HTTP framework: the server maps a
//! [`ProbeResponse`] to its own response type.

use crate::{HealthMonitor, HealthStatus};

/// A probe's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeResponse {
    /// 200 or 503.
    pub status: u16,
    /// The body's media type.
    pub content_type: &'static str,
    /// The body.
    pub body: String,
}

/// `/livez`: the process is alive. Depends on nothing, so it never fails while the process
/// can answer at all.
pub fn livez() -> ProbeResponse {
    ProbeResponse {
        status: 200,
        content_type: "text/plain; charset=utf-8",
        body: "ok\n".into(),
    }
}

/// `/readyz`: 200 while no critical check has failed past its threshold; otherwise 503 with
/// the failing checks.
pub fn readyz(monitor: &HealthMonitor) -> ProbeResponse {
    if monitor.is_ready() {
        return ProbeResponse {
            status: 200,
            content_type: "text/plain; charset=utf-8",
            body: "ok\n".into(),
        };
    }
    let report = monitor.report();
    let failing: Vec<serde_json::Value> = report
        .checks
        .iter()
        .filter(|c| c.status == HealthStatus::Critical.as_str())
        .map(|c| serde_json::json!({"name": c.name, "message": c.message, "consecutive_failures": c.consecutive_failures}))
        .collect();
    ProbeResponse {
        status: 503,
        content_type: "application/json",
        body: serde_json::json!({"status": report.status, "failing": failing}).to_string(),
    }
}

/// `/healthz`: the full report as JSON; 200 unless the process is critical (503).
pub fn healthz(monitor: &HealthMonitor) -> ProbeResponse {
    let report = monitor.report();
    let status = if monitor.is_ready() { 200 } else { 503 };
    ProbeResponse {
        status,
        content_type: "application/json",
        body: serde_json::to_string_pretty(&report).expect("a health report serialises"),
    }
}
