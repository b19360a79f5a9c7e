//! Loading alert configuration: the documented example, and every class of mistake.

use std::time::Duration;

use wasmcage_alert::{
    AlertConfig, ChannelConfig, Condition, Function, Operator, PAGERDUTY_EVENTS_URL,
    PagerDutySeverity, Severity, SeverityMap,
};

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
    assert_eq!(config.channels.len(), 4);
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
    let steps: Vec<(Duration, Vec<String>)> = rate
        .escalation_steps(&config)
        .iter()
        .map(|s| (s.after, s.channels.clone()))
        .collect();
    assert_eq!(
        steps,
        [
            (Duration::from_secs(900), vec!["pagerduty".to_owned()]),
            (Duration::from_secs(2700), vec!["alertmanager".to_owned()]),
        ]
    );
    let canary = config
        .rules
        .iter()
        .find(|r| r.name == "SandboxCanaryFailing")
        .unwrap();
    assert_eq!(canary.escalation_steps(&config)[0].channels, ["pagerduty"]);
    // The shipped counter rule compares growth over a window, so it resolves.
    let threshold = config
        .rules
        .iter()
        .find(|r| matches!(r.condition, Condition::Threshold { .. }))
        .unwrap();
    assert!(matches!(
        threshold.condition,
        Condition::Threshold {
            op: Operator::Gt,
            function: Function::Increase(w),
            ..
        } if w == Duration::from_secs(300)
    ));
    assert_eq!(
        config.channels["pagerduty"],
        ChannelConfig::PagerDuty {
            url: PAGERDUTY_EVENTS_URL.into(),
            routing_key: "R0UT1NGKEY00000000000000000000".into(),
            severity: SeverityMap {
                warning: PagerDutySeverity::Error,
                ..SeverityMap::default()
            },
        }
    );
    assert_eq!(
        config.delivery.outbox.as_deref(),
        Some(std::path::Path::new("/var/lib/wasmcage/alert-outbox.redb"))
    );
    assert_eq!(config.delivery.max_pending, 10_000);
}

#[test]
fn every_counter_the_shipped_rules_compare_is_compared_over_a_window() {
    let config = AlertConfig::from_toml(&documented_example(), &exists).unwrap();
    for rule in &config.rules {
        if let Condition::Threshold {
            metric, function, ..
        } = &rule.condition
            && metric.name.ends_with("_total")
        {
            assert_ne!(*function, Function::Value, "{} latches", rule.name);
        }
    }
}

#[test]
fn windowed_thresholds_parse_and_files_without_them_still_do() {
    let check = |condition: &str, expected: Function| {
        let config = AlertConfig::from_toml(&rule(condition, "[\"ops\"]"), &exists)
            .unwrap_or_else(|e| panic!("{condition}: {e}"));
        match &config.rules[0].condition {
            Condition::Threshold { function, .. } => assert_eq!(*function, expected, "{condition}"),
            other => panic!("{other:?}"),
        }
    };
    let base = "type = \"threshold\"\nmetric = \"wasmcage_traps_total\"\nop = \">\"\nthreshold = 0";
    check(base, Function::Value);
    check(&format!("{base}\nfunction = \"value\""), Function::Value);
    check(
        &format!("{base}\nfunction = \"increase\"\nwindow = \"5m\""),
        Function::Increase(Duration::from_secs(300)),
    );
    check(
        &format!("{base}\nfunction = \"rate\"\nwindow = \"1h\""),
        Function::Rate(Duration::from_secs(3600)),
    );
}

#[test]
fn new_values_are_validated_with_the_key_and_the_reason() {
    let base = "type = \"threshold\"\nmetric = \"wasmcage_traps_total\"\nop = \">\"\nthreshold = 0";
    let ops = "[\"ops\"]";
    let with = |extra: &str| rule(&format!("{base}\n{extra}"), ops);
    // Windows.
    rejects(&with("window = \"5m\""), "a window needs `function");
    rejects(&with("function = \"increase\""), "needs a window");
    rejects(
        &with("function = \"delta\"\nwindow = \"5m\""),
        "\"delta\" is not a function",
    );
    rejects(
        &with("function = \"rate\"\nwindow = \"0s\""),
        "rules[r].condition.window",
    );
    rejects(
        &with("function = \"rate\"\nwindow = \"25h\""),
        "out of range",
    );
    rejects(
        &format!(
            "[evaluation]\ninterval = \"1m\"\n{}",
            with("function = \"rate\"\nwindow = \"30s\"")
        ),
        "shorter than evaluation.interval",
    );
    rejects(
        &rule("type = \"error_rate\"\nwindow = \"0s\"\npercent = 5.0", ops),
        "rules[r].condition.window",
    );
    rejects(&with("windw = \"5m\""), "windw");
    // Escalation policies.
    let with_rule_key = |key: &str| {
        rule(base, ops).replace("[rules.condition]", &format!("{key}\n[rules.condition]"))
    };
    rejects(
        &with_rule_key("escalation_policy = \"nobody\""),
        "unknown escalation policy \"nobody\"",
    );
    let policy = |steps: &str| format!("[escalation_policies.p]\nsteps = [{steps}]\n");
    let rule_with_policy =
        |steps: &str| policy(steps) + &with_rule_key("escalation_policy = \"p\"");
    rejects(
        &rule_with_policy(""),
        "escalation_policies.p.steps: a policy has 1 to 16 steps",
    );
    rejects(
        &rule_with_policy(
            "{ after = \"30m\", channels = [\"ops\"] }, { after = \"10m\", channels = [\"ops\"] }",
        ),
        "escalation_policies.p.steps[1].after: steps must come in order",
    );
    rejects(
        &rule_with_policy("{ after = \"10m\", channels = [\"boss\"] }"),
        "escalation_policies.p.steps[0].channels: unknown channel \"boss\"",
    );
    rejects(
        &rule_with_policy("{ after = \"10m\", channels = [] }"),
        "at least one channel",
    );
    rejects(
        &rule_with_policy("{ after = \"10m\", channels = [\"ops\"], page = true }"),
        "page",
    );
    rejects(
        &(policy("{ after = \"10m\", channels = [\"ops\"] }")
            + &with_rule_key("escalation_policy = \"p\"").replace(
                "[rules.condition]",
                "[rules.escalation]\nafter = \"5m\"\nchannels = [\"ops\"]\n[rules.condition]",
            )),
        "not both",
    );
    // PagerDuty.
    rejects(
        "[channels.pd]\ntype = \"pagerduty\"\n",
        "channels.pd: missing `routing_key`",
    );
    rejects(
        "[channels.pd]\ntype = \"pagerduty\"\nrouting_key = \"\"\n",
        "channels.pd.routing_key",
    );
    rejects(
        "[channels.pd]\ntype = \"pagerduty\"\nrouting_key = \"k\"\nseverity = { warning = \"loud\" }\n",
        "loud",
    );
    rejects(
        "[channels.pd]\ntype = \"pagerduty\"\nrouting_key = \"k\"\nseverity = { fatal = \"critical\" }\n",
        "fatal",
    );
    // Names, headers, descriptions.
    rejects(
        &rule(base, ops).replace("name = \"r\"", "name = \"a:b\""),
        "rule \"a:b\"",
    );
    rejects(
        &rule(base, ops).replace("name = \"r\"", "name = \"\""),
        "rule \"\"",
    );
    rejects(
        "[channels.\"o ps\"]\ntype = \"slack\"\nurl = \"http://x\"\n",
        "channel \"o ps\"",
    );
    rejects(
        "[channels.ops]\ntype = \"webhook\"\nurl = \"http://x\"\nheaders = { \"Bad Header\" = \"v\" }\n",
        "channels.ops.headers.Bad Header: not a valid HTTP header name",
    );
    rejects(
        &rule(base, ops).replace(
            "severity",
            &format!("description = \"{}\"\nseverity", "x".repeat(5000)),
        ),
        "longer than 4096 bytes",
    );
    // Delivery bounds.
    rejects("[delivery]\nmax_attempts = 5000\n", "delivery.max_attempts");
    rejects(
        "[delivery]\ninitial_backoff = \"0s\"\n",
        "delivery.initial_backoff",
    );
    rejects(
        "[delivery]\ninitial_backoff = \"2m\"\nmax_backoff = \"1m\"\n",
        "shorter than delivery.initial_backoff",
    );
    rejects("[delivery]\ntimeout = \"1h\"\n", "delivery.timeout");
    rejects("[delivery]\nmax_pending = 0\n", "delivery.max_pending");
    rejects("[delivery]\noutbox = \"\"\n", "delivery.outbox: empty path");
    rejects("[delivery]\noutbx = \"x\"\n", "outbx");
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
