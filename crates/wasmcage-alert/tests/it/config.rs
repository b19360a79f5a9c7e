//! Loading alert configuration: the documented example, and every class of mistake.

use std::time::Duration;

use wasmcage_alert::{AlertConfig, ChannelConfig, Condition, Operator, Severity};

fn exists(name: &str) -> bool {
    name.starts_with("wasmcage_")
}

/// The complete example of docs/alerting.md, between its ```toml fences.
fn documented_example() -> String {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/alerting.md"
    ))
    .unwrap();
    let start = doc
        .find("```toml\n")
        .expect("a TOML example in docs/alerting.md")
        + 8;
    let end = start + doc[start..].find("```").unwrap();
    doc[start..end].to_owned()
}

#[test]
fn the_documented_example_loads() {
    let config = AlertConfig::from_toml(&documented_example(), &exists).unwrap();
    assert_eq!(config.interval, Duration::from_secs(15));
    assert_eq!(config.channels.len(), 3);
    assert!(
        matches!(config.channels["audit"], ChannelConfig::Webhook { ref secret, .. } if secret.is_some())
    );
    assert_eq!(config.rules.len(), 4);
    let rate = config
        .rules
        .iter()
        .find(|r| r.name == "SandboxErrorRateHigh")
        .unwrap();
    assert_eq!(rate.severity, Severity::Critical);
    assert!(
        matches!(rate.condition, Condition::ErrorRate { window, .. } if window == Duration::from_secs(300))
    );
    assert_eq!(
        rate.escalation.as_ref().unwrap().after,
        Duration::from_secs(900)
    );
    let threshold = config
        .rules
        .iter()
        .find(|r| matches!(r.condition, Condition::Threshold { .. }))
        .unwrap();
    assert!(matches!(
        threshold.condition,
        Condition::Threshold {
            op: Operator::Gt,
            ..
        }
    ));
}

fn rejects(toml: &str, says: &str) {
    match AlertConfig::from_toml(toml, &exists) {
        Ok(_) => panic!("accepted a configuration that should fail with {says:?}"),
        Err(e) => assert!(e.to_string().contains(says), "expected {says:?} in {e}"),
    }
}

const CHANNEL: &str = "[channels.ops]\ntype = \"webhook\"\nurl = \"http://127.0.0.1:1/hook\"\n";

fn rule(condition: &str, channels: &str) -> String {
    format!(
        "{CHANNEL}[[rules]]\nname = \"r\"\nseverity = \"warning\"\nchannels = {channels}\n[rules.condition]\n{condition}\n"
    )
}

#[test]
fn mistakes_are_rejected_with_the_key_and_the_reason() {
    let threshold = "type = \"threshold\"\nmetric = \"wasmcage_up\"\nop = \">\"\nthreshold = 1";
    rejects(&rule(threshold, "[\"pager\"]"), "unknown channel \"pager\"");
    rejects(
        &rule(&threshold.replace("\">\"", "\"=>\""), "[\"ops\"]"),
        "rules[r].condition.op",
    );
    rejects(
        &rule(
            &threshold
                .replace("wasmcage_up", "wasmcage_nope_total")
                .replace("wasmcage_nope_total", "nope_total"),
            "[\"ops\"]",
        ),
        "metric \"nope_total\" does not exist",
    );
    rejects(
        "[channels.ops]\ntype = \"slack\"\n",
        "channels.ops: missing `url`",
    );
    rejects(
        "[channels.ops]\ntype = \"slack\"\nurl = \"ftp://x\"\n",
        "not an http(s) URL",
    );
    rejects(
        "[channels.ops]\ntype = \"pigeon\"\nurl = \"http://x\"\n",
        "pigeon",
    );
    rejects("[evaluation]\ninterval = \"soon\"\n", "evaluation.interval");
    rejects("[evalution]\ninterval = \"1s\"\n", "evalution");
    rejects(&rule(threshold, "[]"), "at least one channel");
    let window = "type = \"error_rate\"\nwindow = \"5 minutes\"\npercent = 5.0";
    rejects(&rule(window, "[\"ops\"]"), "rules[r].condition.window");
}
