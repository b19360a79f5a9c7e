//! The layering rules of ARCHITECTURE.md, checked against every crate's manifest.

use std::collections::BTreeMap;
use std::path::Path;

/// Normal (not dev) dependencies of each crate under `crates/`, by crate name.
fn dependencies() -> BTreeMap<String, Vec<String>> {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates");
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(&crates).unwrap() {
        let dir = entry.unwrap().path();
        let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            manifest.contains(&format!("name = \"{name}\"")),
            "crates/{name}: the folder name must equal the package name"
        );
        let mut deps = Vec::new();
        let mut in_deps = false;
        for line in manifest.lines().map(str::trim) {
            if line.starts_with('[') {
                in_deps = line == "[dependencies]";
                continue;
            }
            if in_deps && !line.is_empty() && !line.starts_with('#') {
                let key = line.split(['=', '.', ' ']).next().unwrap().trim();
                deps.push(key.to_owned());
            }
        }
        out.insert(name, deps);
    }
    out
}

#[test]
fn only_core_depends_on_wasmtime() {
    for (krate, deps) in dependencies() {
        if krate != "wasmcage-core" {
            for dep in &deps {
                assert!(
                    !dep.starts_with("wasmtime"),
                    "{krate} depends on {dep}; only wasmcage-core may"
                );
            }
        }
    }
}

#[test]
fn the_vocabulary_crate_stays_small() {
    let deps = &dependencies()["wasmcage-events"];
    assert_eq!(
        deps,
        &["serde", "serde_json"],
        "wasmcage-events grew a dependency"
    );
}

#[test]
fn observability_crates_never_depend_on_each_other_or_on_core() {
    let observability = [
        "wasmcage-metrics",
        "wasmcage-tracing",
        "wasmcage-health",
        "wasmcage-alert",
    ];
    for (krate, deps) in dependencies() {
        if !observability.contains(&krate.as_str()) {
            continue;
        }
        for dep in &deps {
            assert!(
                !observability.contains(&dep.as_str()) && dep != "wasmcage-core",
                "{krate} depends on {dep}; observability crates meet only in the facade"
            );
        }
    }
}

/// The service and the CLI get their engine, observers, health monitor and alert engine from
/// the facade (`Wasmcage::builder()`); none of them is built a second way beside it.
#[test]
fn only_the_facade_composes_layers() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let composing = [
        "Engine::with_observer",
        "FanOut::new",
        "HealthMonitor::new",
        "HealthMonitor::with_observer",
        "Metrics::new",
        "Metrics::with_registry",
        "TracingObserver::new",
        "AlertEngine::new",
        "Dispatcher::start",
        "Alerting::start",
        "CanaryCheck::new",
    ];
    // Every source file below these directories, submodules (`src/api/`) included.
    let mut pending: Vec<_> = ["crates/wasmcage-server/src", "crates/wasmcage-cli/src"]
        .map(|dir| root.join(dir))
        .into();
    let mut files = Vec::new();
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(path);
            }
        }
    }
    assert!(files.len() > 2);
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        for call in composing {
            assert!(
                !text.contains(call),
                "{} calls {call}: compose through the facade (Wasmcage::builder)",
                path.display()
            );
        }
    }
}

/// Language runtimes are a layer above core and below the facade: the runtime crate runs
/// interpreters on core but never knows the facade, the service or the command line.
#[test]
fn the_runtime_crate_sits_below_the_facade() {
    let deps = &dependencies()["wasmcage-runtime"];
    for dep in deps {
        assert!(
            !["wasmcage", "wasmcage-server", "wasmcage-cli", "axum"].contains(&dep.as_str()),
            "wasmcage-runtime depends on {dep}; it sits below the facade"
        );
    }
}
