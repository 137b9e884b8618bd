//! docs/configuration.md, made from the configuration's JSON Schema (`config::schema`), so
//! that the page's tables of keys, types and defaults are the config types' own: each
//! key's row comes from its field, its default from the field's default function, its
//! meaning from the field's doc comment. The prose around the tables is
//! `configuration.md.in` beside this file. `offload config reference > docs/configuration.md`
//! writes the page; tests/docs.rs fails when the committed page differs.

use serde_json::{Map, Value};

/// The page's prose; `{{keys}}` is where the tables go.
const TEMPLATE: &str = include_str!("configuration.md.in");

/// docs/configuration.md.
pub fn page() -> String {
    let schema = serde_json::to_value(super::schema::schema()).expect("a schema is JSON");
    TEMPLATE.replace("{{keys}}\n", &keys(&schema))
}

/// Walks the schema, following `$ref`s into its `definitions`.
struct Walk<'a> {
    definitions: &'a Map<String, Value>,
}

/// One row of a table.
struct Row {
    key: String,
    kind: String,
    default: String,
    meaning: String,
}

fn keys(schema: &Value) -> String {
    let walk = Walk {
        definitions: schema["definitions"].as_object().expect("definitions"),
    };
    let top = schema["properties"].as_object().expect("properties");
    let mut out = String::new();

    // The keys at the top of the file, then each table in the order a file has them.
    let mut rows = vec![];
    let mut lists = vec![];
    for (key, property) in top {
        if walk.list_of(property).is_some() {
            lists.push((key, property));
        } else if walk.table(property).is_none() && walk.map_of(property).is_none() {
            rows.push(walk.row(key, property, false));
        }
    }
    section(&mut out, "The top of the file", "", &rows);

    // Lists of tables (`[[budgets]]`): a row for the list, one for each key of its tables.
    for (key, property) in lists {
        let mut rows = vec![walk.row(key, property, false)];
        walk.rows(&format!("{key}[]"), walk.list_of(property).expect("a list"), &mut rows);
        let heading = format!("`[[{key}]]`");
        section(&mut out, &heading, &about(&heading, &walk.description(property)), &rows);
    }

    // The tables in the order a file has them, then any other, by name.
    let order = ["http", "store", "auth", "engine", "routing", "prices"];
    let mut tables: Vec<&str> = order.into_iter().filter(|n| top.contains_key(*n)).collect();
    for (key, property) in top {
        if walk.table(property).is_some() && !tables.contains(&key.as_str()) {
            tables.push(key);
        }
    }
    for name in tables {
        let property = &top[name];
        let mut rows = vec![];
        walk.rows(name, walk.table(property).expect("a table"), &mut rows);
        let heading = format!("`[{name}]`");
        section(&mut out, &heading, &about(&heading, &walk.description(property)), &rows);
    }

    let tenants = walk.map_of(&top["tenants"]).expect("tenants is a map");
    let mut rows = vec![];
    walk.rows("tenants.NAME", tenants, &mut rows);
    let heading = "`[tenants.NAME]`";
    section(&mut out, heading, &about(heading, &walk.description(&top["tenants"])), &rows);

    // Every provider: the shared keys, then each kind's own.
    let providers = walk.map_of(&top["providers"]).expect("providers is a map");
    let kinds: Vec<&Value> = providers["oneOf"]
        .as_array()
        .expect("one schema per kind")
        .iter()
        .map(|k| walk.resolve(k))
        .collect();
    let names: Vec<String> = kinds.iter().map(|k| kind_name(k)).collect();
    let mut rows = vec![Row {
        key: "providers.NAME.kind".into(),
        kind: names
            .iter()
            .map(|n| format!("`{n}`"))
            .collect::<Vec<_>>()
            .join(", "),
        default: "required".into(),
        meaning: "The kind of runtime; its own keys are in its table below.".into(),
    }];
    walk.rows("providers.NAME", providers, &mut rows);
    let heading = "`[providers.NAME]`";
    section(&mut out, heading, &about(heading, &walk.description(&top["providers"])), &rows);
    for (kind, name) in kinds.iter().zip(&names) {
        let mut rows = vec![];
        walk.rows("providers.NAME", kind, &mut rows);
        rows.retain(|r| r.key != "providers.NAME.kind");
        if let Some((_, bound)) = super::OWN_POLL_BOUNDS.iter().find(|(k, _)| *k == name.as_str()) {
            rows.push(Row {
                key: "providers.NAME.max_poll_interval_ms".into(),
                kind: "integer".into(),
                default: format!("`{bound}`"),
                meaning: format!(
                    "The `{name}` kind's own default for the shared key: each look is a billed \
                     or budgeted read, and its workloads take tens of seconds to start."
                ),
            });
            rows.sort_by(|a, b| a.key.cmp(&b.key));
        }
        let about = format!(
            "`[providers.NAME]` with `kind = \"{name}\"` takes these keys beside the shared \
             ones; how it runs jobs is on [its page](providers/{name}.md)."
        );
        section(&mut out, &format!("The `{name}` kind"), &about, &rows);
    }
    out
}

/// A table's description without the heading it starts with (`[http]`: limits ... ->
/// Limits ...).
fn about(heading: &str, description: &str) -> String {
    match description.strip_prefix(&format!("{heading}: ")) {
        Some(rest) => {
            let mut chars = rest.chars();
            chars
                .next()
                .map(|c| c.to_uppercase().chain(chars).collect())
                .unwrap_or_default()
        }
        None => description.to_string(),
    }
}

/// A `### heading`, its description and its table.
fn section(out: &mut String, heading: &str, about: &str, rows: &[Row]) {
    out.push_str(&format!("### {heading}\n\n"));
    if !about.is_empty() {
        out.push_str(about);
        out.push_str("\n\n");
    }
    out.push_str("| key | type | default | meaning |\n|---|---|---|---|\n");
    for r in rows {
        out.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            r.key,
            cell(&r.kind),
            cell(&r.default),
            cell(&r.meaning)
        ));
    }
    out.push('\n');
}

/// Text that can stand in a table's cell: one line, no bare `|`.
fn cell(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}

/// A kind's name, from its `kind` property's constant.
fn kind_name(kind: &Value) -> String {
    let tag = &kind["properties"]["kind"];
    tag["const"]
        .as_str()
        .or_else(|| tag["enum"][0].as_str())
        .expect("each kind names itself")
        .to_string()
}

impl<'a> Walk<'a> {
    /// The schema itself, `$ref` (also one inside `allOf`, as schemars writes a described
    /// reference) followed, and `Option`'s `anyOf [T, null]` seen as `T`.
    fn resolve(&self, schema: &'a Value) -> &'a Value {
        if let Some(name) = schema["$ref"].as_str() {
            let name = name.trim_start_matches("#/definitions/");
            return self.resolve(&self.definitions[name]);
        }
        for list in ["allOf", "anyOf"] {
            if let Some(items) = schema[list].as_array() {
                let real: Vec<&Value> = items.iter().filter(|i| i["type"] != "null").collect();
                if real.len() == 1 && schema.get("properties").is_none() {
                    return self.resolve(real[0]);
                }
            }
        }
        schema
    }

    /// The table a property holds (its keys are rows of their own), if it is one.
    fn table(&self, schema: &'a Value) -> Option<&'a Value> {
        let schema = self.resolve(schema);
        schema.get("properties").map(|_| schema)
    }

    /// The table each item of a list holds, if the property is a list of tables.
    fn list_of(&self, schema: &'a Value) -> Option<&'a Value> {
        let schema = self.resolve(schema);
        if schema["type"] != "array" {
            return None;
        }
        self.table(&schema["items"])
    }

    /// What each entry of a map holds (`[tenants.NAME]`), if the property is a map of
    /// tables.
    fn map_of(&self, schema: &'a Value) -> Option<&'a Value> {
        let schema = self.resolve(schema);
        let entry = self.resolve(schema.get("additionalProperties")?);
        (entry.get("properties").is_some() || entry.get("oneOf").is_some()).then_some(entry)
    }

    fn description(&self, schema: &Value) -> String {
        let own = schema["description"].as_str();
        let theirs = || self.resolve(schema)["description"].as_str();
        cell(own.or_else(theirs).unwrap_or(""))
    }

    /// The rows of a table's keys, `prefix.key`; a key that holds a table of its own has
    /// a row for each of its keys instead, and a list of tables a row for itself and one
    /// for each key of its tables (`prefix.key[].inner`).
    fn rows(&self, prefix: &str, table: &Value, out: &mut Vec<Row>) {
        let required: Vec<&str> = table["required"]
            .as_array()
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let Some(properties) = table["properties"].as_object() else {
            return;
        };
        for (key, property) in properties {
            let name = format!("{prefix}.{key}");
            if let Some(inner) = self.table(property) {
                // An optional table has a row of its own, for what leaving it out means.
                if !required.contains(&key.as_str()) && property.get("default").is_none() {
                    out.push(Row {
                        key: name.clone(),
                        kind: "table".into(),
                        default: "unset".into(),
                        meaning: self.description(property),
                    });
                }
                self.rows(&name, inner, out);
                continue;
            }
            out.push(self.row(&name, property, required.contains(&key.as_str())));
            // A map of tables (`[staging.tenants.NAME]`): a row for each key of its entries.
            if let Some(entry) = self.map_of(property) {
                self.rows(&format!("{name}.NAME"), entry, out);
            }
            let resolved = self.resolve(property);
            if resolved["type"] == "array" {
                if let Some(inner) = self.table(&resolved["items"]) {
                    self.rows(&format!("{name}[]"), inner, out);
                }
            }
        }
    }

    fn row(&self, key: &str, property: &Value, required: bool) -> Row {
        let default = match property.get("default") {
            _ if required => "required".to_string(),
            Some(Value::Null) | None => "unset".to_string(),
            Some(v) => format!("`{}`", toml(v)),
        };
        Row {
            key: key.to_string(),
            kind: self.kind(property),
            default,
            meaning: self.description(property),
        }
    }

    /// A property's type, in TOML's words.
    fn kind(&self, schema: &Value) -> String {
        let schema = self.resolve(schema);
        if let Some(values) = schema["enum"].as_array() {
            return one_of(values.iter().map(toml));
        }
        if let Some(value) = schema.get("const") {
            return format!("`{}`", toml(value));
        }
        if let Some(options) = schema["oneOf"].as_array().or(schema["anyOf"].as_array()) {
            let consts: Option<Vec<String>> = options
                .iter()
                .map(|o| {
                    let o = self.resolve(o);
                    o.get("const")
                        .map(toml)
                        .or_else(|| o["enum"].as_array().map(|e| one_of(e.iter().map(toml))))
                })
                .collect();
            if let Some(consts) = consts {
                return consts.join(", ");
            }
        }
        let types: Vec<&str> = match &schema["type"] {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts
                .iter()
                .filter_map(Value::as_str)
                .filter(|t| *t != "null")
                .collect(),
            _ => vec![],
        };
        match types.as_slice() {
            ["integer"] => "integer".into(),
            ["number"] => "number".into(),
            ["boolean"] => "boolean".into(),
            ["string"] => "string".into(),
            ["array"] => format!("list of {}", self.kind(&schema["items"])),
            ["object"] => match schema.get("additionalProperties") {
                Some(Value::Bool(false)) | None => "table".into(),
                Some(entry) => format!("table of {}", self.kind(entry)),
            },
            _ => "table".into(),
        }
    }
}

/// Values a key takes, each in code.
fn one_of(values: impl Iterator<Item = String>) -> String {
    values
        .map(|v| format!("`{v}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A value as TOML writes it inline, strings bare at the top (`never`), quoted inside a
/// list or a table.
fn toml(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => inline(other),
    }
}

fn inline(value: &Value) -> String {
    match value {
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(inline).collect::<Vec<_>>().join(", ")
        ),
        Value::Object(map) if map.is_empty() => "{}".into(),
        Value::Object(map) => format!(
            "{{ {} }}",
            map.iter()
                .map(|(k, v)| format!("{k} = {}", inline(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        other => other.to_string(),
    }
}
