//! The observability artefacts in deploy/ against what the service really exports
//! (docs/metrics.md, docs/observability.md): every metric a Grafana panel or a Prometheus rule
//! names exists, every recording rule it reads is recorded, every exported metric is
//! documented.
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use integration_tests::TestApp;
use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_path_buf()
}

/// Metric names the service announces (`# TYPE` lines), with the series names a histogram
/// adds.
async fn exported(app: &TestApp) -> BTreeSet<String> {
    let text = app.operator_get("/metrics").await.text().await.unwrap();
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        if let (Some("#"), Some("TYPE"), Some(name), Some(kind)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        {
            names.insert(name.to_string());
            if kind == "histogram" {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
            }
        }
    }
    names
}

const OUR_PREFIXES: &[&str] = &[
    "http_",
    "answers_",
    "answer_engine_",
    "kapa_",
    "db_pool_",
    "process_",
];

/// Identifiers in a PromQL expression (or a rule file) that name our metrics or recording
/// rules.
fn names_in(text: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut metrics = BTreeSet::new();
    let mut recorded = BTreeSet::new();
    let mut current = String::new();
    for c in text.chars().chain(std::iter::once(' ')) {
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            current.push(c);
            continue;
        }
        let token = std::mem::take(&mut current);
        if token.starts_with("answers:") {
            recorded.insert(token);
        } else if !token.contains(':') && OUR_PREFIXES.iter().any(|p| token.starts_with(p)) {
            metrics.insert(token);
        }
    }
    (metrics, recorded)
}

fn rule_files() -> Vec<(String, String)> {
    ["recording-rules.yml", "alerts.yml"]
        .iter()
        .map(|f| {
            let path = repo().join("deploy/prometheus").join(f);
            let text = std::fs::read_to_string(&path).unwrap();
            // Comments aside: prose may name things loosely.
            let code: String = text
                .lines()
                .filter(|l| !l.trim_start().starts_with('#'))
                .map(|l| format!("{l}\n"))
                .collect();
            (f.to_string(), code)
        })
        .collect()
}

fn dashboards() -> Vec<(String, Value)> {
    let dir = repo().join("deploy/grafana/dashboards");
    let mut out: Vec<(String, Value)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| {
            let json = serde_json::from_str(&std::fs::read_to_string(&p).unwrap())
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p.file_name().unwrap().to_string_lossy().into_owned(), json)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[tokio::test]
async fn dashboards_and_rules_name_only_metrics_the_service_exports() {
    let app = TestApp::spawn().await;
    let exported = exported(&app).await;
    // `up` is Prometheus' own; the rest must be ours.
    let recorded: BTreeSet<String> = rule_files()
        .iter()
        .flat_map(|(_, text)| {
            text.lines()
                .filter_map(|l| l.trim().strip_prefix("- record:"))
                .map(|r| r.trim().to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(recorded.len() >= 9, "{recorded:?}");

    let mut problems = Vec::new();
    let mut check = |source: &str, text: &str| {
        let (metrics, rules) = names_in(text);
        for m in metrics.difference(&exported) {
            problems.push(format!("{source}: `{m}` is not exported"));
        }
        for r in rules.difference(&recorded) {
            problems.push(format!("{source}: `{r}` is not recorded by any rule"));
        }
    };
    for (file, text) in rule_files() {
        check(&file, &text);
    }
    let boards = dashboards();
    let titles: BTreeSet<&str> = boards.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(
        titles,
        BTreeSet::from([
            "api-red.json",
            "engine.json",
            "slos.json",
            "streaming.json",
            "tenants.json"
        ])
    );
    for (file, board) in &boards {
        assert!(
            board["uid"].is_string() && board["title"].is_string(),
            "{file}"
        );
        let panels = board["panels"].as_array().unwrap();
        assert!(!panels.is_empty(), "{file}");
        for panel in panels {
            let title = panel["title"].as_str().unwrap_or("?");
            assert_eq!(
                panel["datasource"]["uid"], "${datasource}",
                "{file} / {title}: the datasource variable"
            );
            let targets = panel["targets"].as_array().unwrap();
            assert!(!targets.is_empty(), "{file} / {title}");
            for target in targets {
                let expr = target["expr"].as_str().unwrap();
                check(&format!("{file} / {title}"), expr);
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));

    // A misspelt name is caught.
    let (metrics, _) = names_in("sum(rate(http_request_total[5m]))");
    assert!(!metrics.is_subset(&exported));
}

#[tokio::test]
async fn every_exported_metric_is_documented() {
    let app = TestApp::spawn().await;
    let docs = std::fs::read_to_string(repo().join("docs/metrics.md")).unwrap();
    let missing: Vec<String> = exported(&app)
        .await
        .into_iter()
        .filter(|m| !m.ends_with("_bucket") && !m.ends_with("_sum") && !m.ends_with("_count"))
        .filter(|m| !docs.contains(&format!("`{m}`")))
        .collect();
    assert!(missing.is_empty(), "not in docs/metrics.md: {missing:?}");
}
