//! Request logs: the trace id (from `traceparent`, or a new one) beside the request id on the
//! request's lines; successful requests sampled, failures and slow requests always logged; no
//! token and no question text in any line. A test binary of its own: it installs the
//! process-wide subscriber and reads everything logged.
use integration_tests::logs::CapturedLogs;
use integration_tests::TestApp;
use serde_json::{json, Value};

fn traceparent(trace: &str) -> String {
    format!("00-{trace}-00f067aa0ba902b7-01")
}

/// The `request finished` lines of the trace.
fn finished(lines: &[Value], trace: &str) -> Vec<Value> {
    lines
        .iter()
        .filter(|l| l["fields"]["message"] == "request finished")
        .filter(|l| l["span"]["trace_id"] == trace)
        .cloned()
        .collect()
}

#[tokio::test]
async fn request_lines_carry_trace_and_request_ids_sampled_with_failures_and_slow_ones_always() {
    let captured = CapturedLogs::install();
    let app = TestApp::builder()
        .configure(|s| {
            s.log.success_sample_rate = 0.0;
            s.log.slow_request_ms = 60_000;
        })
        .spawn()
        .await;
    let token = app.create_tenant("acme", "alice").await;
    let trace = |n: u32| format!("4bf92f3577b34da6a3ce929d{n:08x}");
    // Successful and fast: sampled out at rate 0.
    for n in 0..20 {
        let response = app
            .client
            .get(format!("{}/health/live", app.address))
            .header("traceparent", traceparent(&trace(n)))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    // A failure: always logged, with the caller's trace id beside the request id it was given.
    let failing = trace(100);
    let response = app
        .client
        .get(format!(
            "{}/v1/conversations/{}",
            app.address,
            uuid::Uuid::now_v7()
        ))
        .bearer_auth(&token)
        .header("traceparent", traceparent(&failing))
        .header("x-request-id", "req-404-check")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    // A question with personal text, to look for afterwards.
    let canary = "CANARY-my-salary-is-91234";
    let asked = app
        .post(
            "/v1/conversations",
            &token,
            json!({"question": format!("Why is {canary} so low?")}),
        )
        .await;
    assert_eq!(asked.status(), 201);

    let slow = TestApp::builder()
        .configure(|s| {
            s.log.success_sample_rate = 0.0;
            s.log.slow_request_ms = 0;
        })
        .spawn()
        .await;
    let slow_trace = trace(200);
    slow.client
        .get(format!("{}/health/live", slow.address))
        .header("traceparent", traceparent(&slow_trace))
        .send()
        .await
        .unwrap();

    let lines = captured.lines();
    for n in 0..20 {
        assert!(finished(&lines, &trace(n)).is_empty(), "sampled out");
    }
    let failure = finished(&lines, &failing);
    assert_eq!(failure.len(), 1, "the failure is logged once");
    assert_eq!(failure[0]["span"]["request_id"], "req-404-check");
    assert_eq!(failure[0]["fields"]["status"], 404);
    let slow_line = finished(&lines, &slow_trace);
    assert_eq!(slow_line.len(), 1);
    assert_eq!(slow_line[0]["level"], "WARN");
    // Every line logged inside the failing request carries both ids.
    let inside: Vec<&Value> = lines
        .iter()
        .filter(|l| l["span"]["trace_id"] == failing.as_str())
        .collect();
    assert!(!inside.is_empty());
    assert!(inside
        .iter()
        .all(|l| l["span"]["request_id"] == "req-404-check"));
    // No token, no question text, anywhere.
    let text = captured.text();
    assert!(!text.contains(&token), "a token in the logs");
    assert!(!text.contains(canary), "question text in the logs");
    assert!(
        !text.contains(&app.platform_token),
        "the operator token in the logs"
    );
}
