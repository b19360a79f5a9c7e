//! The module store across restarts: durable uploads, quarantine, deletes that stay deleted,
//! and compiling in the background after a start.

use std::path::Path;

use serde_json::{Value, json};

use crate::{ADD, ECHO, KEY_A, KEY_B, Running, error_code, eventually, start_at};

/// Waits until `id` is served (it may be compiling after a start), and returns its
/// description; every answer on the way is a 200 or a well-formed 503 `module_compiling`.
async fn ready(s: &Running, id: &str) -> Value {
    eventually("the module is compiled", || async {
        let r = s
            .client
            .get(format!("{}/v1/modules/{id}", s.base))
            // Ignored by a server without keys.
            .header("x-api-key", KEY_A)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let retry = r.headers().contains_key("retry-after");
        let body: Value = r.json().await.unwrap();
        match status {
            200 => Some(body),
            503 => {
                assert_eq!(error_code(&body), "module_compiling", "{body}");
                assert!(retry, "a 503 says when to retry");
                None
            }
            other => panic!("{other}: {body}"),
        }
    })
    .await
}

/// Waits until nothing is compiling and returns the listed ids.
async fn settled_ids(s: &Running) -> Vec<String> {
    eventually("every stored module is loaded or quarantined", || async {
        let (_, text) = s.get("/v1/modules").await;
        let list: Value = serde_json::from_str(&text).unwrap();
        let modules = list["modules"].as_array().unwrap();
        modules.iter().all(|m| m["status"] == "ready").then(|| {
            modules
                .iter()
                .map(|m| m["id"].as_str().unwrap().to_owned())
                .collect()
        })
    })
    .await
}

fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_survive_a_crash_and_concurrent_re_uploads() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_at(dir.path(), |_| {}).await;
    let (status, module) = s.upload("add.wat", ADD).await;
    assert_eq!(status, 201);
    let id = module["id"].as_str().unwrap().to_owned();
    let uploads: Vec<_> = (0..8)
        .map(|i| {
            let (client, url) = (
                s.client.clone(),
                format!("{}/v1/modules?name=again{i}", s.base),
            );
            tokio::spawn(async move {
                let r = client.post(url).body(ADD).send().await.unwrap();
                (r.status().as_u16(), r.json::<Value>().await.unwrap())
            })
        })
        .collect();
    for upload in uploads {
        let (status, body) = upload.await.unwrap();
        assert_eq!(
            (status, body["id"].as_str()),
            (200, Some(id.as_str())),
            "{body}"
        );
        assert_eq!(body["name"], "add.wat", "the first name stays");
    }
    // A crash: the serving task is dropped mid-flight, with no shutdown.
    s.done.abort();
    let _ = s.done.await;
    let modules = dir.path().join("modules");
    assert_eq!(
        files(&modules),
        [
            format!("{id}.name"),
            format!("{id}.owners"),
            format!("{id}.wasm")
        ],
        "no temporary files are left behind"
    );
    let s = start_at(dir.path(), |_| {}).await;
    let described = ready(&s, &id).await;
    assert_eq!(described["name"], "add.wat");
    let (status, out) = s
        .post(
            &format!("/v1/modules/{id}/invoke"),
            json!({"export": "add", "args": [2, 3]}),
        )
        .await;
    assert_eq!((status, &out["results"]), (200, &json!([5])), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_serves_only_what_the_store_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_at(dir.path(), |_| {}).await;
    // A name that is a module itself: metadata, never compiled.
    let phantom = "(module (func (export \"phantom\")))";
    let encoded: String = phantom
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let r = s
        .client
        .post(format!("{}/v1/modules?name={encoded}", s.base))
        .body(ADD)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let add = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, echo) = s.upload("echo.wat", ECHO).await;
    let echo = echo["id"].as_str().unwrap().to_owned();
    let flipped_module = "(module (func (export \"f\") (result i32) (i32.const 1)))";
    let (_, flipped) = s.upload("flipped.wat", flipped_module).await;
    let flipped = flipped["id"].as_str().unwrap().to_owned();
    let r = s
        .client
        .delete(format!("{}/v1/modules/{echo}", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    // The deleted module's compiled code is gone from the engine's disk cache too.
    let cache = dir.path().join("cache");
    let cached: Vec<String> = std::fs::read_dir(&cache)
        .unwrap()
        .flatten()
        .flat_map(|engine_dir| files(&engine_dir.path()))
        .collect();
    assert!(cached.iter().any(|f| f.starts_with(&add)), "{cached:?}");
    assert!(!cached.iter().any(|f| f.starts_with(&echo)), "{cached:?}");
    s.shut_down().await;

    // What a restart must not serve.
    let modules = dir.path().join("modules");
    std::fs::write(modules.join("README.txt"), "not a module").unwrap();
    let wasm = wat::parse_str(phantom).unwrap();
    std::fs::write(modules.join("abc.wasm"), &wasm).unwrap();
    std::fs::write(modules.join(format!("{}.name", "1".repeat(64))), phantom).unwrap();
    let flipped_path = modules.join(format!("{flipped}.wasm"));
    let mut bytes = std::fs::read(&flipped_path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&flipped_path, bytes).unwrap();

    let s = start_at(dir.path(), |_| {}).await;
    // The server answers while it compiles.
    assert_eq!(s.get("/livez").await.0, 200);
    assert_eq!(settled_ids(&s).await, std::slice::from_ref(&add));
    let described = ready(&s, &add).await;
    assert_eq!(described["name"], phantom);
    let exports: Vec<&str> = described["exports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert!(!exports.contains(&"phantom"), "{exports:?}");
    for gone in [&echo, &flipped] {
        let (status, body) = s.get(&format!("/v1/modules/{gone}")).await;
        assert_eq!(status, 404, "{gone}: {body}");
    }
    assert_eq!(
        files(&modules),
        [
            format!("{add}.name"),
            format!("{add}.owners"),
            format!("{add}.wasm")
        ]
    );
    let quarantined = files(&dir.path().join("quarantine"));
    for expected in [
        "README.txt".to_owned(),
        "abc.wasm".to_owned(),
        format!("{}.name", "1".repeat(64)),
        format!("{flipped}.wasm"),
        format!("{flipped}.name"),
    ] {
        assert!(
            quarantined.contains(&expected),
            "{expected} not in {quarantined:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_hold_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let configure = |c: &mut wasmcage_server::ServerConfig| {
        c.api_keys = vec![KEY_A.into(), KEY_B.into()];
        c.quota.max_modules = 1;
    };
    let upload = |s: &Running, key: &'static str, module: &'static str| {
        let request = s
            .client
            .post(format!("{}/v1/modules?name=m", s.base))
            .header("x-api-key", key)
            .body(module);
        async move {
            let r = request.send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let one = "(module (func (export \"one\") (result i32) (i32.const 1)))";
    let two = "(module (func (export \"two\") (result i32) (i32.const 2)))";
    let s = start_at(dir.path(), configure).await;
    let (status, first) = upload(&s, KEY_A, one).await;
    assert_eq!(status, 201, "{first}");
    s.shut_down().await;
    // The store knows the owner by a digest, never by the key itself.
    for file in files(&dir.path().join("modules")) {
        let bytes = std::fs::read(dir.path().join("modules").join(&file)).unwrap();
        assert!(
            !String::from_utf8_lossy(&bytes).contains(KEY_A),
            "{file} holds the key"
        );
    }

    let s = start_at(dir.path(), configure).await;
    ready(&s, first["id"].as_str().unwrap()).await;
    let (status, body) = upload(&s, KEY_A, two).await;
    assert_eq!(
        (status, error_code(&body)),
        (403, "quota_exceeded"),
        "{body}"
    );
    let (status, body) = upload(&s, KEY_B, two).await;
    assert_eq!(status, 201, "{body}");
}
