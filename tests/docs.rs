//! The README and the example config tell the truth about the code's defaults: each key of
//! the `[http]`, `[engine]` and `[routing]` sections, with the default the code gives it,
//! has its row in the README's configuration table and its line in
//! deploy/offload.example.toml, so a default changed in one place cannot go stale in the
//! others.

use offload::config::{EngineConfig, HttpConfig, RoutingConfig};
use serde_json::Value;

fn sections() -> Vec<(&'static str, serde_json::Map<String, Value>)> {
    let map = |v: Value| v.as_object().unwrap().clone();
    vec![
        ("http", map(serde_json::to_value(HttpConfig::default()).unwrap())),
        ("engine", map(serde_json::to_value(EngineConfig::default()).unwrap())),
        ("routing", map(serde_json::to_value(RoutingConfig::default()).unwrap())),
    ]
}

/// A value as the README's table writes it: `10`, `never`.
fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[test]
fn the_readme_table_has_each_default_the_code_has() {
    let readme = std::fs::read_to_string("README.md").unwrap();
    for (section, keys) in sections() {
        for (key, value) in keys {
            let name = format!("| `{section}.{key}` |");
            let row = readme
                .lines()
                .find(|l| l.starts_with(&name))
                .unwrap_or_else(|| panic!("README.md has no row for {section}.{key}"));
            let default = row[name.len()..].split('|').next().unwrap().trim();
            assert_eq!(
                default,
                format!("`{}`", plain(&value)),
                "README.md's default for {section}.{key}"
            );
        }
    }
}

#[test]
fn the_example_config_has_each_default_the_code_has() {
    let text = std::fs::read_to_string("deploy/offload.example.toml").unwrap();
    for (section, keys) in sections() {
        let header = format!("[{section}]");
        let body: Vec<&str> = text
            .lines()
            .skip_while(|l| l.trim() != header)
            .skip(1)
            .take_while(|l| !l.trim_start().starts_with('['))
            .collect();
        assert!(!body.is_empty(), "deploy/offload.example.toml has no {header}");
        for (key, value) in keys {
            let line = body
                .iter()
                .map(|l| l.split('#').next().unwrap().trim())
                .find(|l| l.split('=').next().unwrap().trim() == key)
                .unwrap_or_else(|| panic!("{header} in the example config has no {key}"));
            let written = line.split_once('=').unwrap().1.trim();
            // TOML writes these values as JSON does: numbers bare, strings quoted.
            assert_eq!(written, value.to_string(), "the example config's {section}.{key}");
        }
    }
}
