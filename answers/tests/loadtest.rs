//! `answers loadtest` as a user runs it: the real binary starts its own service on a fresh
//! database, drives the mixed scenario, writes its report, and holds the run to the budgets —
//! passing within them, failing (non-zero, the breach named) outside them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "answers-loadtest-{}-{name}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn loadtest(args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_answers"));
    if let Ok(url) = std::env::var("TEST_DATABASE_URL") {
        command.env("APP__DATABASE__URL", format!("{url}/postgres"));
    }
    command
        .env("APP__LOG__FILTER", "warn")
        .arg("loadtest")
        .args(args)
        .output()
        .expect("the binary runs")
}

fn report(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("the report is written")).unwrap()
}

fn committed_budgets() -> String {
    concat!(env!("CARGO_MANIFEST_DIR"), "/../perf/budgets.toml").to_string()
}

#[test]
fn a_short_run_meets_the_ci_budgets_and_reports_every_request() {
    let dir = scratch("ci");
    let report_path = dir.join("report.json");
    let out = loadtest(&[
        "--rate",
        "25",
        "--duration",
        "4",
        "--budgets",
        &committed_budgets(),
        "--tier",
        "ci",
        "--report",
        report_path.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("all met"), "{stdout}");
    let report = report(&report_path);
    let step = &report["steps"][0];
    let total = step["all"]["count"].as_u64().unwrap();
    assert_eq!(total, 100, "25/s for 4 s: {step}");
    assert_eq!(step["all"]["errors"], 0, "{step}");
    let routes = step["routes"].as_array().unwrap();
    let per_route: u64 = routes.iter().map(|r| r["count"].as_u64().unwrap()).sum();
    assert_eq!(per_route, total, "every request is in one route's figures");
    for route in ["POST /v1/conversations", "GET /v1/analytics"] {
        let stats = routes.iter().find(|r| r["route"] == route).unwrap();
        assert!(stats["p50_ms"].as_f64().unwrap() > 0.0, "{stats}");
        assert_eq!(stats["errors"], 0, "{stats}");
    }
    assert_eq!(report["budgets"]["tier"], "ci");
    assert_eq!(report["budgets"]["breaches"], Value::Array(vec![]));
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn a_breached_budget_fails_the_run_and_names_the_breach() {
    let dir = scratch("breach");
    let budgets = dir.join("budgets.toml");
    std::fs::write(
        &budgets,
        "[tiers.impossible]\nall = { p50_ms = 0.001 }\n\
         [tiers.impossible.routes.\"GET /v1/analytics\"]\np99_ms = 0.002\n",
    )
    .unwrap();
    let report_path = dir.join("report.json");
    let out = loadtest(&[
        "--rate",
        "20",
        "--duration",
        "2",
        "--budgets",
        budgets.to_str().unwrap(),
        "--tier",
        "impossible",
        "--report",
        report_path.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert!(stdout.contains("BREACH"), "{stdout}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("budget(s) breached"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let breaches = report(&report_path)["budgets"]["breaches"].clone();
    let breaches = breaches.as_array().unwrap();
    assert!(breaches
        .iter()
        .any(|b| b["route"] == "GET /v1/analytics" && b["figure"] == "p99_ms"));
    assert!(breaches
        .iter()
        .all(|b| b["actual"].as_f64() > b["limit"].as_f64()));
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn budgets_for_a_route_the_scenario_does_not_send_are_refused_before_any_load() {
    let dir = scratch("typo");
    let budgets = dir.join("budgets.toml");
    std::fs::write(
        &budgets,
        "[tiers.ci]\n[tiers.ci.routes.\"GET /v1/analytcs\"]\np99_ms = 20\n",
    )
    .unwrap();
    let out = loadtest(&[
        "--duration",
        "600",
        "--budgets",
        budgets.to_str().unwrap(),
        "--tier",
        "ci",
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("GET /v1/analytcs"), "{stderr}");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn a_sweep_plots_latency_against_offered_load() {
    let dir = scratch("sweep");
    let plot = dir.join("latency.svg");
    let report_path = dir.join("sweep.json");
    let out = loadtest(&[
        "--sweep",
        "10,30",
        "--duration",
        "2",
        "--plot",
        plot.to_str().unwrap(),
        "--report",
        report_path.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let steps = report(&report_path)["steps"].clone();
    let offered: Vec<f64> = steps
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["offered_per_second"].as_f64().unwrap())
        .collect();
    assert_eq!(offered, [10.0, 30.0]);
    let svg = std::fs::read_to_string(&plot).unwrap();
    // Three percentiles, one point per step each.
    assert_eq!(svg.matches("<circle").count(), 6, "{svg}");
    assert!(svg.contains("at 30/s"), "{svg}");
    std::fs::remove_dir_all(dir).ok();
}
