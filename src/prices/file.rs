//! The price file (`prices.file`): the figures the last good refresh read, as JSON, so that
//! a gateway starts with them and a person can see what each is and where it came from.
//!
//! ```json
//! {"written_at": "2026-12-03T10:00:00Z",
//!  "figures": [{"kind": "aci", "region": "eastus", "figure": "vcpu_hour",
//!               "usd_per_hour": 0.0405, "source": "azure-retail-prices",
//!               "sku": "Standard vCPU Duration (meter ...)", "quoted": "0.0405 USD per 1 Hour",
//!               "effective": "2021-06-08T00:00:00Z", "read_at": "2026-12-03T10:00:00Z"}]}
//! ```

use std::path::Path;

use offload_provider::figures::{ReadFigure, ReadPrices};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PriceFile {
    /// When the refresh that wrote it finished.
    written_at: String,
    figures: Vec<ReadFigure>,
}

/// The figures of the file at `path`; none when there is no file yet. A file that is not a
/// price file is an error naming the key (`figures[2].usd_per_hour: ...`).
pub fn load(path: &Path) -> Result<ReadPrices, String> {
    let shown = path.display();
    let text = match std::fs::read(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ReadPrices::default()),
        Err(e) => return Err(format!("price file {shown}: {e}")),
    };
    let mut json = serde_json::Deserializer::from_slice(&text);
    let file: PriceFile = serde_path_to_error::deserialize(&mut json).map_err(|e| {
        let key = e.path().to_string();
        format!("price file {shown}: {key}: {}", e.into_inner())
    })?;
    ReadPrices::new(file.figures).map_err(|e| format!("price file {shown}: {e}"))
}

/// Replaces the file at `path` with `figures`, whole: written beside it, then renamed over
/// it, so that a reader never sees half a file.
pub fn save(path: &Path, figures: &ReadPrices, now: &str) -> Result<(), String> {
    let file = PriceFile {
        written_at: now.to_string(),
        figures: figures.all().cloned().collect(),
    };
    let mut text = serde_json::to_string_pretty(&file).map_err(|e| e.to_string())?;
    text.push('\n');
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let shown = path.display();
    std::fs::write(&temporary, text).map_err(|e| format!("writing the price file {shown}: {e}"))?;
    std::fs::rename(&temporary, path).map_err(|e| format!("writing the price file {shown}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figure(usd: f64) -> ReadFigure {
        ReadFigure {
            kind: "ecs".into(),
            region: "us-east-1".into(),
            figure: "vcpu_hour".into(),
            usd_per_hour: usd,
            source: "aws-price-list".into(),
            sku: "8CESGAFWKAJ98PME (USE1-Fargate-vCPU-Hours:perCPU)".into(),
            quoted: "0.0404800000 USD per hours".into(),
            effective: "2026-11-01T00:00:00Z".into(),
            read_at: "2026-12-03T10:00:00Z".into(),
        }
    }

    #[test]
    fn a_saved_file_loads_as_it_was_and_a_missing_one_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("prices.json");
        assert!(load(&path).unwrap().is_empty());
        let figures = ReadPrices::new(vec![figure(0.04048)]).unwrap();
        save(&path, &figures, "2026-12-03T10:00:00Z").unwrap();
        assert_eq!(load(&path).unwrap(), figures);
        assert!(!dir.path().join("prices.json.tmp").exists());
    }

    #[test]
    fn a_malformed_file_is_refused_naming_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("prices.json");
        let err = |text: &str| {
            std::fs::write(&path, text).unwrap();
            load(&path).unwrap_err()
        };
        let mut good = serde_json::json!({"written_at": "t", "figures": [figure(0.04048)]});
        good["figures"][0]["usd_per_hour"] = "cheap".into();
        let e = err(&good.to_string());
        assert!(e.contains("figures[0].usd_per_hour"), "{e}");
        good["figures"][0]["usd_per_hour"] = (-0.5).into();
        let e = err(&good.to_string());
        assert!(
            e.contains("figures[0].usd_per_hour") && e.contains("not a price"),
            "{e}"
        );
        good["figures"][0]["usd_per_hour"] = 0.04.into();
        good["figures"][0]["pirce"] = 1.into();
        let e = err(&good.to_string());
        assert!(e.contains("figures[0]") && e.contains("pirce"), "{e}");
        let e = err("{\"figures\": [");
        assert!(
            e.starts_with(&format!("price file {}", path.display())),
            "{e}"
        );
    }
}
