//! Traces end to end (docs/observability.md): one command's request, its append, the relay's
//! publish and the projections' apply are spans of one trace, each the child of the one
//! before, exported through the service's OpenTelemetry layer (here to the SDK's in-memory
//! exporter); its log lines carry the same trace id. A test binary of its own: the subscriber
//! is process-wide.
use std::time::Duration;

use integration_tests::logs::CapturedLogs;
use integration_tests::{wait_for, TestApp};
use opentelemetry::trace::{SpanId, TraceId};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use serde_json::json;

fn attribute(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.to_string())
}

fn named<'a>(spans: &'a [SpanData], name: &str) -> Vec<&'a SpanData> {
    spans.iter().filter(|s| s.name == name).collect()
}

#[tokio::test]
async fn one_command_is_one_trace_through_the_api_the_store_kafka_and_the_projections() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let logs = CapturedLogs::install_with_traces(&provider);
    let app = TestApp::builder().streaming().spawn().await;

    // The caller's trace.
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let token = app.token("traced", domain::Role::Admin, "alice");
    let response = app
        .client
        .post(format!("{}/v1/tenant", app.address))
        .bearer_auth(&token)
        .header("traceparent", format!("00-{trace}-{caller_span}-01"))
        .header("x-request-id", "req-traced")
        .json(&json!({"name": "Traced Inc"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let trace_id = TraceId::from_hex(trace).unwrap();

    // Wait until both projections of tenant events (tenants, audit) have applied every event
    // of the command in this trace.
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let spans = wait_for(
        "the projections' spans",
        Duration::from_secs(30),
        || async {
            let _ = provider.force_flush();
            let spans: Vec<SpanData> = exporter
                .get_finished_spans()
                .unwrap()
                .into_iter()
                .filter(|s| s.span_context.trace_id() == trace_id)
                .collect();
            (named(&spans, "projection.apply").len() as i64 >= 2 * stored).then_some(spans)
        },
    )
    .await;
    let applied: std::collections::BTreeSet<String> = named(&spans, "projection.apply")
        .iter()
        .filter_map(|s| attribute(s, "projection"))
        .collect();
    assert_eq!(
        applied,
        std::collections::BTreeSet::from(["audit".to_string(), "tenants".to_string()])
    );

    // The request: a child of the caller's span, named by its route, with the tenant.
    let request = named(&spans, "POST /v1/tenant");
    assert_eq!(
        request.len(),
        1,
        "{:#?}",
        spans.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
    let request = request[0];
    assert_eq!(
        request.parent_span_id,
        SpanId::from_hex(caller_span).unwrap()
    );
    assert_eq!(
        attribute(request, "http.route").as_deref(),
        Some("/v1/tenant")
    );
    assert_eq!(
        attribute(request, "http.response.status_code").as_deref(),
        Some("201")
    );
    assert_eq!(attribute(request, "tenant").as_deref(), Some("traced"));
    // The append, under the request (through the command bus's span).
    let appends = named(&spans, "event_store.append");
    assert_eq!(appends.len(), 1);
    let append = appends[0];
    assert_eq!(
        attribute(append, "aggregate_type").as_deref(),
        Some("tenant")
    );
    let mut ancestor = append.parent_span_id;
    let mut chain = Vec::new();
    while ancestor != SpanId::INVALID && ancestor != request.span_context.span_id() {
        let parent = spans
            .iter()
            .find(|s| s.span_context.span_id() == ancestor)
            .unwrap_or_else(|| panic!("the append's ancestors are in the trace: {chain:?}"));
        chain.push(parent.name.to_string());
        ancestor = parent.parent_span_id;
    }
    assert_eq!(ancestor, request.span_context.span_id(), "{chain:?}");
    // The relay's publishes, one per event appended: children of the append (the context
    // stored with the events).
    let publishes = named(&spans, "relay.publish");
    assert_eq!(publishes.len() as i64, stored);
    assert!(publishes
        .iter()
        .any(|p| attribute(p, "event_type").as_deref() == Some("TenantCreated")));
    for publish in &publishes {
        assert_eq!(publish.parent_span_id, append.span_context.span_id());
    }
    // Each projection's apply: a child of a publish (the context in the Kafka headers).
    let applies = named(&spans, "projection.apply");
    assert_eq!(
        applies.len() as i64,
        2 * stored,
        "two projections read tenant events"
    );
    for apply in applies {
        assert!(publishes
            .iter()
            .any(|p| p.span_context.span_id() == apply.parent_span_id));
        assert_eq!(attribute(apply, "tenant").as_deref(), Some("traced"));
    }

    // The request's log line carries the trace id, its own span id and the request id.
    let line = logs
        .lines()
        .into_iter()
        .find(|l| {
            l["fields"]["message"] == "request finished" && l["span"]["request_id"] == "req-traced"
        })
        .expect("the request's line");
    assert_eq!(line["span"]["trace_id"], trace);
    // The tenant by its id, the user by a pseudonym, never the id they signed in with.
    assert_eq!(line["span"]["tenant"], "traced");
    let user = line["span"]["user"].as_str().unwrap();
    assert!(user.starts_with("u_") && !user.contains("alice"), "{user}");
    assert_eq!(
        line["span"]["span_id"],
        request.span_context.span_id().to_string()
    );

    // Without a caller's trace: a new one, the same in the logs and in the export.
    let response = app
        .client
        .get(format!("{}/v1/tenant", app.address))
        .bearer_auth(&token)
        .header("x-request-id", "req-untraced")
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success() || response.status() == 404);
    let line = wait_for(
        "the second request's line",
        Duration::from_secs(5),
        || async {
            logs.lines().into_iter().find(|l| {
                l["fields"]["message"] == "request finished"
                    && l["span"]["request_id"] == "req-untraced"
            })
        },
    )
    .await;
    let logged = line["span"]["trace_id"].as_str().unwrap().to_string();
    assert_ne!(logged, trace);
    let _ = provider.force_flush();
    let exported = exporter.get_finished_spans().unwrap();
    assert!(
        exported
            .iter()
            .any(|s| s.name == "GET /v1/tenant" && s.span_context.trace_id().to_string() == logged),
        "the logged trace id is the exported one"
    );
}
