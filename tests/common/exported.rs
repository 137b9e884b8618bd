//! The metrics the gateway exports, read from its source: every `metrics::counter!`,
//! `gauge!` and `histogram!` under src/, by name (the constant's value where the macro
//! names a constant). Dashboards, alert rules and the docs are checked against these, not
//! against a running gateway's /metrics, where a counter shows only once it has counted.

use std::collections::BTreeMap;
use std::path::Path;

use regex::Regex;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Every metric the code records, with its kind.
pub fn metrics() -> BTreeMap<String, Kind> {
    let macro_call =
        Regex::new(r#"metrics::(counter|gauge|histogram)!\(\s*(?:"([a-z0-9_]+)"|([A-Z_]+))"#)
            .unwrap();
    let constant = Regex::new(r#"const ([A-Z_]+): &str = "([a-z0-9_]+)";"#).unwrap();
    let mut found = BTreeMap::new();
    for file in rust_files(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src")) {
        let text = std::fs::read_to_string(&file).unwrap();
        let constants: BTreeMap<&str, &str> = constant
            .captures_iter(&text)
            .map(|c| (c.get(1).unwrap().as_str(), c.get(2).unwrap().as_str()))
            .collect();
        for c in macro_call.captures_iter(&text) {
            let kind = match &c[1] {
                "counter" => Kind::Counter,
                "gauge" => Kind::Gauge,
                _ => Kind::Histogram,
            };
            let name = match (c.get(2), c.get(3)) {
                (Some(literal), _) => literal.as_str(),
                (None, Some(name)) => constants.get(name.as_str()).unwrap_or_else(|| {
                    panic!(
                        "{}: the metric name {} is no &str constant of that file",
                        file.display(),
                        name.as_str()
                    )
                }),
                (None, None) => unreachable!(),
            };
            let before = found.insert(name.to_string(), kind);
            assert!(
                before.is_none_or(|k| k == kind),
                "{name} is recorded as two kinds"
            );
        }
    }
    found
}

/// The series names Prometheus gets for the metrics: a histogram's `_bucket`, `_sum` and
/// `_count`, every other metric's own name.
pub fn series() -> Vec<String> {
    metrics()
        .into_iter()
        .flat_map(|(name, kind)| match kind {
            Kind::Histogram => ["_bucket", "_sum", "_count"]
                .map(|s| format!("{name}{s}"))
                .to_vec(),
            _ => vec![name],
        })
        .collect()
}

fn rust_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = vec![];
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}
