#![allow(clippy::unwrap_used)]
//! The resolver against a local server speaking Vault's KV v2 API, real files and the real
//! environment.
use std::path::PathBuf;

use secrecy::{ExposeSecret, SecretString};
use secrets::{SecretError, SecretResolver, SecretSettings, VaultSettings};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn settings(root: PathBuf, ttl_ms: u64, vault: Option<&MockServer>) -> SecretSettings {
    SecretSettings {
        env_prefix: "KAPA_".into(),
        file_root: root,
        ttl_ms,
        vault: vault.map(|v| VaultSettings {
            address: v.uri(),
            token: SecretString::from("vault-token-123"),
            namespace: None,
            path_prefix: "tenants/".into(),
            timeout_ms: 1_000,
        }),
    }
}

fn temp_root() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("secrets-test-{}", uuid_like()));
    std::fs::create_dir_all(dir.join("acme")).unwrap();
    std::fs::create_dir_all(dir.join("globex")).unwrap();
    dir
}

fn uuid_like() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

fn kv2(field: &str, value: &str) -> serde_json::Value {
    serde_json::json!({"request_id": "r", "data": {"data": {field: value},
        "metadata": {"version": 3, "destroyed": false}}})
}

#[tokio::test]
async fn reads_vault_kv2_with_the_token_and_picks_up_a_rotation_after_the_ttl() {
    let vault = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/kv/data/tenants/acme/kapa"))
        .and(header("X-Vault-Token", "vault-token-123"))
        .respond_with(ResponseTemplate::new(200).set_body_json(kv2("api_key", "key-v1")))
        .up_to_n_times(1)
        .mount(&vault)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/kv/data/tenants/acme/kapa"))
        .respond_with(ResponseTemplate::new(200).set_body_json(kv2("api_key", "key-v2")))
        .mount(&vault)
        .await;
    let resolver = SecretResolver::new(settings(temp_root(), 200, Some(&vault))).unwrap();
    let reference = "vault://kv/tenants/acme/kapa";
    let first = resolver.resolve("acme", reference).await.unwrap();
    assert_eq!(first.expose_secret(), "key-v1");
    // Within the TTL: the cache answers, Vault is not asked again.
    let cached = resolver.resolve("acme", reference).await.unwrap();
    assert_eq!(cached.expose_secret(), "key-v1");
    assert_eq!(vault.received_requests().await.unwrap().len(), 1);
    tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    let rotated = resolver.resolve("acme", reference).await.unwrap();
    assert_eq!(rotated.expose_secret(), "key-v2");
    // Invalidation reads again at once.
    resolver.invalidate("acme", reference);
    resolver.resolve("acme", reference).await.unwrap();
    assert_eq!(vault.received_requests().await.unwrap().len(), 3);
}

#[tokio::test]
async fn vault_failures_are_told_apart() {
    let vault = MockServer::start().await;
    Mock::given(path("/v1/kv/data/tenants/acme/missing"))
        .respond_with(ResponseTemplate::new(404).set_body_json(serde_json::json!({"errors": []})))
        .mount(&vault)
        .await;
    Mock::given(path("/v1/kv/data/tenants/acme/down"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&vault)
        .await;
    Mock::given(path("/v1/kv/data/tenants/acme/other-field"))
        .respond_with(ResponseTemplate::new(200).set_body_json(kv2("password", "x")))
        .mount(&vault)
        .await;
    let resolver = SecretResolver::new(settings(temp_root(), 1_000, Some(&vault))).unwrap();
    let err = resolver
        .resolve("acme", "vault://kv/tenants/acme/missing")
        .await
        .unwrap_err();
    assert!(matches!(err, SecretError::NotFound(_)), "{err}");
    let err = resolver
        .resolve("acme", "vault://kv/tenants/acme/down")
        .await
        .unwrap_err();
    assert!(err.retryable(), "{err}");
    let err = resolver
        .resolve("acme", "vault://kv/tenants/acme/other-field")
        .await
        .unwrap_err();
    assert!(matches!(err, SecretError::NotFound(_)), "{err}");
}

#[tokio::test]
async fn files_and_environment_variables_resolve_inside_the_tenants_space_only() {
    let root = temp_root();
    let file = root.join("acme").join("kapa");
    std::fs::write(&file, "file-key\n").unwrap();
    std::fs::write(root.join("globex").join("kapa"), "globex-key").unwrap();
    std::env::set_var("KAPA_ACME_API_KEY", "env-key");
    std::env::set_var("KAPA_GLOBEX_API_KEY", "globex-env-key");
    let resolver = SecretResolver::new(settings(root.clone(), 0, None)).unwrap();

    let from_file = resolver
        .resolve("acme", &format!("file://{}", file.display()))
        .await
        .unwrap();
    assert_eq!(from_file.expose_secret(), "file-key");
    // A rotated file is read again (TTL 0 here).
    std::fs::write(&file, "file-key-2").unwrap();
    let rotated = resolver
        .resolve("acme", &format!("file://{}", file.display()))
        .await
        .unwrap();
    assert_eq!(rotated.expose_secret(), "file-key-2");
    let from_env = resolver
        .resolve("acme", "env://KAPA_ACME_API_KEY")
        .await
        .unwrap();
    assert_eq!(from_env.expose_secret(), "env-key");

    // Another tenant's key, the service's own settings, or a path escaping the root: refused.
    for reference in [
        format!("file://{}", root.join("globex").join("kapa").display()),
        format!("file://{}/acme/../globex/kapa", root.display()),
        "env://KAPA_GLOBEX_API_KEY".to_string(),
        "env://APP__AUTH__JWT_SECRET".to_string(),
    ] {
        let err = resolver.resolve("acme", &reference).await.unwrap_err();
        assert!(
            matches!(err, SecretError::NotAllowed(_)),
            "{reference}: {err}"
        );
    }
    let err = resolver
        .resolve("acme", "env://KAPA_ACME_NOT_SET")
        .await
        .unwrap_err();
    assert!(matches!(err, SecretError::NotFound(_)));
}

#[test]
fn the_vault_token_never_shows_in_the_settings_debug_output() {
    // Settings are logged at start-up in some deployments; the token must print redacted.
    let vault = VaultSettings {
        address: "https://vault.test".into(),
        token: SecretString::from("hvs.super-secret-token"),
        namespace: None,
        path_prefix: "tenants/".into(),
        timeout_ms: 1_000,
    };
    let printed = format!("{:?}", settings_with(vault));
    assert!(!printed.contains("super-secret"), "{printed}");
    assert!(
        printed.contains("vault.test"),
        "the settings did print: {printed}"
    );
}

fn settings_with(vault: VaultSettings) -> SecretSettings {
    SecretSettings {
        env_prefix: "KAPA_".into(),
        file_root: "/run/secrets".into(),
        ttl_ms: 0,
        vault: Some(vault),
    }
}
