//! The API reference a person can browse: `/docs` renders the OpenAPI document this
//! gateway serves at `/openapi.json` (its own providers and options filled in), `/docs/tes`
//! the TES one. Rendered here with maud from the document itself, so the page cannot drift
//! from it, needs nothing from a CDN and no script: the dashboard's stylesheet and CSP.
//! No token: the documents are public too.

use axum::extract::State;
use axum::response::Html;
use maud::{html, Markup, DOCTYPE};
use serde_json::{Map, Value};

use super::{CSS, ICON};
use crate::api::AppState;

/// The methods an OpenAPI path item may have, in the order the page lists them.
const METHODS: [&str; 8] = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];

pub async fn v1(State(state): State<AppState>) -> Html<String> {
    let doc = crate::api::doc::served(&state.engine);
    Html(page(&doc, "/openapi.json", "").into_string())
}

pub async fn tes(State(state): State<AppState>) -> Html<String> {
    let doc = crate::tes::doc::served(&state.engine.staging);
    Html(page(&doc, "/ga4gh/tes/v1/openapi.json", "/ga4gh/tes/v1").into_string())
}

/// One operation, as the page shows it.
struct Operation<'a> {
    method: &'a str,
    path: &'a str,
    op: &'a Map<String, Value>,
}

impl Operation<'_> {
    fn anchor(&self) -> String {
        match self.op.get("operationId").and_then(Value::as_str) {
            Some(id) => format!("op-{id}"),
            None => format!("op-{}-{}", self.method, self.path.replace(['/', '{', '}', ':'], "-")),
        }
    }
}

/// The page: the operations by tag, then the schemas. `base` is the path the document's
/// paths are under (its `servers`).
fn page(doc: &Value, json: &str, base: &str) -> Markup {
    let title = doc["info"]["title"].as_str().unwrap_or("API");
    let mut operations = vec![];
    for (path, item) in doc["paths"].as_object().into_iter().flatten() {
        for method in METHODS {
            if let Some(op) = item.get(method).and_then(Value::as_object) {
                operations.push(Operation { method, path, op });
            }
        }
    }
    let mut tags: Vec<(String, String)> = doc["tags"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| {
            let name = t["name"].as_str()?.to_string();
            Some((name, t["description"].as_str().unwrap_or_default().to_string()))
        })
        .collect();
    for o in &operations {
        let tag = tag_of(o.op);
        if !tags.iter().any(|(name, _)| *name == tag) {
            tags.push((tag, String::new()));
        }
    }
    let schemas = doc["components"]["schemas"].as_object();
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · API reference" }
                link rel="stylesheet" href=(CSS);
                link rel="icon" href=(ICON) type="image/svg+xml";
            }
            body.reference {
                header {
                    span.brand { "offload" }
                    nav {
                        a href="/docs" class=[(base.is_empty()).then_some("here")] { "API" }
                        a href="/docs/tes" class=[(!base.is_empty()).then_some("here")] { "TES" }
                        a href="/ui/jobs" { "Dashboard" }
                    }
                }
                main {
                    h1 { (title) " " span.muted { (doc["info"]["version"].as_str().unwrap_or_default()) } }
                    p { (text(doc["info"]["description"].as_str().unwrap_or_default())) }
                    p.muted {
                        "The OpenAPI document this page shows: " a href=(json) { (json) } "."
                        @if !base.is_empty() { " Its paths are under " code { (base) } "." }
                    }
                    nav.toc aria-label="Contents" {
                        @for (tag, _) in &tags {
                            h2 { a href={ "#tag-" (tag) } { (tag) } }
                            ul {
                                @for o in operations.iter().filter(|o| tag_of(o.op) == *tag) {
                                    li {
                                        a href={ "#" (o.anchor()) } {
                                            span class={ "method " (o.method) } { (o.method.to_uppercase()) }
                                            " " code { (base) (o.path) }
                                        }
                                        @if let Some(s) = o.op.get("summary").and_then(Value::as_str) { " " (s) }
                                    }
                                }
                            }
                        }
                        @if schemas.is_some() { h2 { a href="#schemas" { "Schemas" } } }
                    }
                    @for (tag, description) in &tags {
                        section.tag id={ "tag-" (tag) } {
                            h2 { (tag) }
                            @if !description.is_empty() { p { (text(description)) } }
                            @for o in operations.iter().filter(|o| tag_of(o.op) == *tag) {
                                (operation(o, base))
                            }
                        }
                    }
                    @if let Some(schemas) = schemas {
                        section id="schemas" {
                            h2 { "Schemas" }
                            @for (name, schema) in schemas {
                                (schema_section(name, schema))
                            }
                        }
                    }
                }
            }
        }
    }
}

fn tag_of(op: &Map<String, Value>) -> String {
    op.get("tags")
        .and_then(|t| t[0].as_str())
        .unwrap_or("other")
        .to_string()
}

fn operation(o: &Operation<'_>, base: &str) -> Markup {
    let params: Vec<&Value> = o.op.get("parameters").and_then(Value::as_array).into_iter().flatten().collect();
    let secured = o.op.get("security").and_then(Value::as_array).is_some_and(|s| !s.is_empty());
    html! {
        article.operation id=(o.anchor()) {
            h3 {
                span class={ "method " (o.method) } { (o.method.to_uppercase()) }
                " " code { (base) (o.path) }
            }
            @if let Some(s) = o.op.get("summary").and_then(Value::as_str) { p.summary { (s) } }
            @if let Some(d) = o.op.get("description").and_then(Value::as_str) { p { (text(d)) } }
            p.muted {
                @if secured { "Needs " code { "Authorization: Bearer TOKEN" } "." } @else { "No token." }
            }
            @if !params.is_empty() {
                h4 { "Parameters" }
                table {
                    tr { th { "name" } th { "in" } th { "type" } th { "description" } }
                    @for p in params {
                        tr {
                            td { code { (p["name"].as_str().unwrap_or_default()) }
                                @if p["required"] == Value::Bool(true) { " " span.required { "required" } } }
                            td { (p["in"].as_str().unwrap_or_default()) }
                            td { (type_of(&p["schema"])) }
                            td { (text(p["description"].as_str().or_else(|| p["schema"]["description"].as_str()).unwrap_or_default())) }
                        }
                    }
                }
            }
            @if let Some(body) = o.op.get("requestBody") {
                h4 { "Request body" }
                @for (kind, content) in body["content"].as_object().into_iter().flatten() {
                    p { code { (kind) } ": " (type_of(&content["schema"])) }
                }
            }
            h4 { "Responses" }
            table {
                tr { th { "status" } th { "description" } th { "body" } }
                @for (status, response) in o.op.get("responses").and_then(Value::as_object).into_iter().flatten() {
                    tr {
                        td { code { (status) } }
                        td { (text(response["description"].as_str().unwrap_or_default())) }
                        td {
                            @for (kind, content) in response["content"].as_object().into_iter().flatten() {
                                div { code { (kind) } " " (type_of(&content["schema"])) }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn schema_section(name: &str, schema: &Value) -> Markup {
    let required: Vec<&str> = schema["required"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    html! {
        article.schema id={ "schema-" (name) } {
            h3 { (name) }
            @if let Some(d) = schema["description"].as_str() { p { (text(d)) } }
            @match schema["properties"].as_object() {
                Some(properties) => table {
                    tr { th { "field" } th { "type" } th { "description" } }
                    @for (field, property) in properties {
                        tr {
                            td { code { (field) } @if required.contains(&field.as_str()) { " " span.required { "required" } } }
                            td { (type_of(property)) (limits(property)) }
                            td { (text(property["description"].as_str().unwrap_or_default())) }
                        }
                    }
                },
                None => p { (type_of(schema)) (limits(schema)) },
            }
        }
    }
}

/// A schema's type, with a link for each named schema it is or holds.
fn type_of(schema: &Value) -> Markup {
    if let Some(name) = schema["$ref"].as_str().and_then(|r| r.strip_prefix("#/components/schemas/")) {
        return html! { a href={ "#schema-" (name) } { (name) } };
    }
    for (key, joiner) in [("oneOf", " or "), ("anyOf", " or "), ("allOf", " and ")] {
        if let Some(parts) = schema[key].as_array() {
            return html! {
                @for (i, part) in parts.iter().enumerate() {
                    @if i > 0 { (joiner) }
                    (type_of(part))
                }
            };
        }
    }
    if let Some(values) = schema["enum"].as_array() {
        let values: Vec<String> = values.iter().map(|v| v.to_string()).collect();
        return html! { "one of " code { (values.join(", ")) } };
    }
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    html! {
        @for (i, t) in types.iter().enumerate() {
            @if i > 0 { " or " }
            @match *t {
                "array" => { "array of " (type_of(&schema["items"])) },
                "object" => @match schema.get("additionalProperties") {
                    Some(values) if values.is_object() => { "map of " (type_of(values)) },
                    _ => "object",
                },
                other => (other),
            }
        }
        @if types.is_empty() { "any" }
        @if let Some(format) = schema["format"].as_str() { " (" (format) ")" }
    }
}

/// A schema's limits, as a reader checks a value against them.
fn limits(schema: &Value) -> Markup {
    let shown: Vec<String> = [
        ("minimum", "≥"), ("exclusiveMinimum", ">"), ("maximum", "≤"), ("exclusiveMaximum", "<"),
        ("minLength", "length ≥"), ("maxLength", "length ≤"), ("minItems", "items ≥"), ("maxItems", "items ≤"),
        ("maxProperties", "entries ≤"), ("pattern", "matches"), ("default", "default"),
    ]
    .iter()
    .filter_map(|(key, what)| Some(format!("{what} {}", schema.get(*key)?)))
    .collect();
    html! { @if !shown.is_empty() { div.limits { (shown.join("; ")) } } }
}

/// A description's Markdown, with `code` spans kept as code and the rest as text (maud
/// escapes both).
fn text(markdown: &str) -> Markup {
    html! {
        @for (i, part) in markdown.split('`').enumerate() {
            @if i % 2 == 1 { code { (part) } } @else { (part) }
        }
    }
}
