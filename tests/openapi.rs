//! The committed OpenAPI document must be what the code generates.

#[test]
fn committed_openapi_matches_the_code() {
    let committed = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/openapi/offload.v1.yaml"
    ))
    .expect("openapi/offload.v1.yaml is missing");
    let generated = offload::api::doc::openapi_yaml();
    assert!(
        committed == generated,
        "openapi/offload.v1.yaml is stale; regenerate it with `cargo run -q -- openapi > openapi/offload.v1.yaml`"
    );
}

#[test]
fn committed_tes_openapi_matches_the_code() {
    let committed = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/openapi/tes.v1.yaml"
    ))
    .expect("openapi/tes.v1.yaml is missing");
    assert!(
        committed == offload::tes::doc::openapi_yaml(),
        "openapi/tes.v1.yaml is stale; regenerate it with `cargo run -q -- openapi --tes > openapi/tes.v1.yaml`"
    );
}
