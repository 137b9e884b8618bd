//! The JSON Schema of offload.toml (`offload config schema`), made from the config types
//! themselves: each key's type, default and description come from its field, its default
//! function and its doc comment, so the schema, the reference tables of
//! docs/configuration.md (`config::reference`) and the code cannot disagree. Draft 7, with
//! `definitions`, which Taplo (Even Better TOML) reads for completion and checks.

use schemars::generate::SchemaSettings;
use schemars::Schema;

use super::Config;

/// The schema of offload.toml.
pub fn schema() -> Schema {
    SchemaSettings::draft07()
        .into_generator()
        .into_root_schema_for::<Config>()
}

/// The schema as the committed file `deploy/offload.schema.json` holds it.
pub fn schema_json() -> String {
    let mut text = serde_json::to_string_pretty(&schema()).expect("a schema is JSON");
    text.push('\n');
    text
}
