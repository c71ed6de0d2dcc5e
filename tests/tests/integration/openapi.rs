use integration_tests::TestApp;

const COMMITTED: &str = include_str!("../../../docs/openapi.json");

#[test]
fn the_committed_openapi_document_matches_the_code() {
    let generated = answers_api::openapi::document().unwrap();
    assert!(
        generated == COMMITTED,
        "docs/openapi.json is out of date: run `cargo run -p answers -- openapi > docs/openapi.json` and commit it"
    );
    let doc: serde_json::Value = serde_json::from_str(&generated).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    for path in [
        "/v1/conversations",
        "/v1/tenant",
        "/v1/sources/{id}/sync/complete",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} is documented");
    }
    // Every reference resolves: a schema used only by reference must be registered.
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for reference in generated
        .split("\"#/components/schemas/")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
    {
        assert!(
            schemas.contains_key(reference),
            "{reference} is referenced but not defined"
        );
    }
}

#[tokio::test]
async fn the_service_serves_the_same_document_and_the_docs_page() {
    let app = TestApp::spawn().await;
    let served: serde_json::Value = app
        .client
        .get(format!("{}/openapi.json", app.address))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let committed: serde_json::Value = serde_json::from_str(COMMITTED).unwrap();
    assert_eq!(served, committed);
    let page = app
        .client
        .get(format!("{}/docs", app.address))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("SwaggerUIBundle") && page.contains("/openapi.json"));
}
