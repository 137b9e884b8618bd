//! Spec parsing and validation over generated input (proptest): nothing panics whatever
//! the body, what the patterns accept is exactly what the parsers accept, and an accepted
//! spec reads back the same after the server writes it out.

use offload::model::{parse_cpu, parse_quantity, patterns, JobSpec};
use proptest::prelude::*;
use serde_json::Value;

/// Keys that reach into a spec, and some that do not.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("image".to_string()),
        Just("resources".to_string()),
        Just("cpu".to_string()),
        Just("memory".to_string()),
        Just("gpu".to_string()),
        Just("count".to_string()),
        Just("kind".to_string()),
        Just("env".to_string()),
        Just("secret_env".to_string()),
        Just("labels".to_string()),
        Just("provider_options".to_string()),
        Just("timeout_seconds".to_string()),
        "[A-Za-z_][A-Za-z0-9_]{0,6}",
        ".{0,4}",
    ]
}

fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "[0-9]{1,4}(\\.[0-9]{1,3})?(m|Mi|Gi|K|G)?".prop_map(Value::from),
        ".{0,8}".prop_map(Value::from),
    ];
    leaf.prop_recursive(5, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(key(), inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn quantity_like() -> impl Strategy<Value = String> {
    prop_oneof!["[0-9. ]{0,8}(m|k|K|M|G|T|Ki|Mi|Gi|Ti|Qi)?", ".{0,6}"]
}

proptest! {
    #[test]
    fn any_body_is_refused_or_validated_without_panic(mut body in json()) {
        if let Value::Object(map) = &mut body {
            map.entry("image").or_insert(Value::from("img"));
        }
        if let Ok(spec) = serde_json::from_value::<JobSpec>(body) {
            if let Ok(resources) = spec.validate() {
                prop_assert!(resources.cpu > 0.0 && resources.cpu <= 1024.0);
                prop_assert!(resources.memory_bytes >= 1);
                let written = serde_json::to_value(&spec).unwrap();
                let read: JobSpec = serde_json::from_value(written).unwrap();
                prop_assert_eq!(read, spec);
            }
        }
    }

    #[test]
    fn quantities_parse_exactly_when_the_pattern_matches(text in quantity_like()) {
        prop_assert_eq!(parse_quantity(&text).is_some(), patterns::QUANTITY.is_match(&text));
        prop_assert_eq!(parse_cpu(&text).is_some(), patterns::CPU.is_match(&text));
        if let Some(cpu) = parse_cpu(&text) {
            prop_assert!(cpu > 0.0 && cpu < 1000.0, "{} parsed as {}", text, cpu);
        }
    }
}
