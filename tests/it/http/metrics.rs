//! `GET /metrics`: valid Prometheus text behind the API token, counting a real call
//! (calls by mode, turns, interrupts, LLM errors by kind, latency histograms).

use std::collections::{BTreeMap, HashMap};

use crate::support::fake_llm::{FakeLlm, Reply};
use crate::support::spawn_app;

const TOKEN: &str = "metrics-test-token-0123456789";

/// One parsed sample: metric name, labels, value.
type Sample = (String, BTreeMap<String, String>, f64);

/// Parses the Prometheus text exposition format strictly enough to catch mistakes:
/// every sample's family has a `# TYPE` before it, names and labels are well formed,
/// values are numbers, histogram buckets are cumulative and end at `+Inf == _count`.
fn parse_prometheus(text: &str) -> Result<Vec<Sample>, String> {
    let mut types: HashMap<String, String> = HashMap::new();
    let mut samples = Vec::new();
    let valid_name = |n: &str| {
        !n.is_empty()
            && n.chars().enumerate().all(|(i, c)| {
                c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
            })
    };
    for (n, line) in text.lines().enumerate() {
        let err = |m: &str| format!("line {}: {m}: {line:?}", n + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some("TYPE"), Some(name), Some(kind)) => {
                    if !valid_name(name) {
                        return Err(err("bad metric name"));
                    }
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                        return Err(err("bad type"));
                    }
                    if types.insert(name.to_string(), kind.to_string()).is_some() {
                        return Err(err("TYPE given twice"));
                    }
                }
                (Some("HELP"), Some(name), _) if valid_name(name) => {}
                _ => return Err(err("bad comment")),
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').ok_or_else(|| err("no value"))?;
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().map_err(|_| err("value is not a number"))?,
        };
        let (name, labels) = match series.split_once('{') {
            None => (series, BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest
                    .strip_suffix('}')
                    .ok_or_else(|| err("unclosed labels"))?;
                let mut labels = BTreeMap::new();
                for pair in body.split(',').filter(|p| !p.is_empty()) {
                    let (k, v) = pair.split_once('=').ok_or_else(|| err("bad label"))?;
                    let v = v
                        .strip_prefix('"')
                        .and_then(|v| v.strip_suffix('"'))
                        .ok_or_else(|| err("label value not quoted"))?;
                    if !valid_name(k) {
                        return Err(err("bad label name"));
                    }
                    labels.insert(k.to_string(), v.to_string());
                }
                (name, labels)
            }
        };
        if !valid_name(name) {
            return Err(err("bad metric name"));
        }
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|f| types.get(*f).is_some_and(|t| t == "histogram"))
            })
            .unwrap_or(name);
        if !types.contains_key(family) {
            return Err(err("sample before its # TYPE"));
        }
        samples.push((name.to_string(), labels, value));
    }
    // Histograms: cumulative buckets, +Inf equal to _count.
    for (family, kind) in &types {
        if kind != "histogram" {
            continue;
        }
        let buckets: Vec<f64> = samples
            .iter()
            .filter(|(n, _, _)| *n == format!("{family}_bucket"))
            .map(|(_, _, v)| *v)
            .collect();
        if buckets.windows(2).any(|w| w[1] < w[0]) {
            return Err(format!("{family}: buckets are not cumulative"));
        }
        let inf = samples
            .iter()
            .find(|(n, l, _)| {
                *n == format!("{family}_bucket") && l.get("le").map(String::as_str) == Some("+Inf")
            })
            .map(|s| s.2);
        let count = samples
            .iter()
            .find(|(n, _, _)| *n == format!("{family}_count"))
            .map(|s| s.2);
        if inf.is_none() || inf != count {
            return Err(format!(
                "{family}: +Inf bucket {inf:?} differs from _count {count:?}"
            ));
        }
    }
    Ok(samples)
}

fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .find(|(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .unwrap_or_else(|| panic!("no sample {name} {labels:?}"))
        .2
}

#[test]
fn the_parser_rejects_broken_text() {
    assert!(parse_prometheus("# TYPE a counter\na 1\n").is_ok());
    assert!(parse_prometheus("a 1\n").is_err(), "sample without TYPE");
    assert!(parse_prometheus("# TYPE a counter\na one\n").is_err());
    assert!(parse_prometheus("# TYPE a counter\na{x=1} 1\n").is_err());
    assert!(
        parse_prometheus("# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n")
            .is_err()
    );
}

#[tokio::test]
async fn metrics_are_prometheus_text_and_count_a_call() {
    let llm = FakeLlm::start().await;
    let base = llm.base_url();
    let app = spawn_app(&[
        ("LLM_PROVIDER", "openai"),
        ("OPENAI_API_KEY", "sk-test-key"),
        ("OPENAI_BASE_URL", base.as_str()),
        ("API_TOKEN", TOKEN),
    ])
    .await;
    let client = reqwest::Client::new();

    // Behind the API token.
    let denied = client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(denied.status(), 401);

    // One call: a reply, an interruption, and a reply that fails with HTTP 400.
    llm.push(Reply::tokens(&["Olá, ", "tudo bem?"]));
    llm.push(Reply::Status(
        400,
        r#"{"error":{"message":"bad request"}}"#.into(),
    ));
    let mut call = app.relay().await;
    call.setup("CA_metrics").await;
    call.prompt("Oi").await;
    assert_eq!(call.reply().await.text, "Olá, tudo bem?");
    call.interrupt("Olá,").await;
    call.prompt("E então?").await;
    call.reply().await; // the fallback
    app.wait_active_calls(1).await;
    let live = client
        .get(app.url("/metrics"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    let live = parse_prometheus(&live.text().await.unwrap()).unwrap();
    assert_eq!(
        value(&live, "voxrelay_active_calls", &[("mode", "relay")]),
        1.0
    );
    drop(call);
    app.wait_active_calls(0).await;

    let response = client
        .get(app.url("/metrics"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let text = response.text().await.unwrap();
    let samples = parse_prometheus(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));

    assert_eq!(
        value(&samples, "voxrelay_calls_total", &[("mode", "relay")]),
        1.0
    );
    assert_eq!(
        value(&samples, "voxrelay_calls_total", &[("mode", "stream")]),
        0.0
    );
    assert_eq!(
        value(&samples, "voxrelay_active_calls", &[("mode", "relay")]),
        0.0
    );
    assert_eq!(value(&samples, "voxrelay_turns_total", &[]), 2.0);
    assert_eq!(value(&samples, "voxrelay_interrupts_total", &[]), 1.0);
    assert_eq!(
        value(&samples, "voxrelay_llm_errors_total", &[("kind", "http")]),
        1.0
    );
    assert_eq!(
        value(
            &samples,
            "voxrelay_llm_errors_total",
            &[("kind", "timeout")]
        ),
        0.0
    );
    // Both replies reached the caller (the second as the fallback); only the first
    // had a token from the LLM.
    assert_eq!(
        value(&samples, "voxrelay_time_to_first_token_seconds_count", &[]),
        2.0
    );
    assert_eq!(
        value(&samples, "voxrelay_llm_first_token_seconds_count", &[]),
        1.0
    );
    let ttft_sum = value(&samples, "voxrelay_time_to_first_token_seconds_sum", &[]);
    assert!(ttft_sum > 0.0 && ttft_sum < 10.0, "{ttft_sum}");
    assert_eq!(value(&samples, "voxrelay_draining", &[]), 0.0);
    assert_eq!(
        value(&samples, "voxrelay_log_lines_dropped_total", &[]),
        0.0
    );
}
