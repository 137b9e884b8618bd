//! Prices read from the clouds' public catalogs, which a provider's price sheet uses over
//! its built-in defaults, and where each figure of a sheet came from.
//!
//! The gateway reads the catalogs (`offload prices refresh`) into its price file, a list of
//! [`ReadFigure`]s. A provider builds its sheet from [`Figures`]: it asks for each figure by
//! name, for its own kind and region, with its built-in default, and gets the figure read
//! where there is one. The names are the constants below, shared by the providers, which
//! ask for them, and the gateway's catalog readers, which find them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::PriceSheet;

/// USD per vCPU-hour.
pub const VCPU_HOUR: &str = "vcpu_hour";
/// USD per GiB-hour of memory (the catalogs' "GB" of memory, which these runtimes count
/// in 2^30 bytes, as [`PriceSheet`] does).
pub const GB_HOUR: &str = "gb_hour";
/// The same on spot capacity.
pub const SPOT_VCPU_HOUR: &str = "spot_vcpu_hour";
pub const SPOT_GB_HOUR: &str = "spot_gb_hour";
/// The same on ARM (Graviton) capacity.
pub const ARM_VCPU_HOUR: &str = "arm_vcpu_hour";
pub const ARM_GB_HOUR: &str = "arm_gb_hour";

/// USD per GPU-hour of `kind`.
pub fn gpu_hour(kind: &str) -> String {
    format!("gpu_hour.{kind}")
}

/// One figure as a catalog gave it: an entry of the price file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadFigure {
    /// The provider kind whose sheet uses it (`aci`, `ecs`, ...).
    pub kind: String,
    /// The region it is the price in, as the provider's config names it.
    pub region: String,
    /// Which figure ([`VCPU_HOUR`], [`gpu_hour`], ...).
    pub figure: String,
    /// USD per hour of the figure's unit, normalised from the catalog's.
    pub usd_per_hour: f64,
    /// The catalog: `azure-retail-prices`, `aws-price-list` or `google-cloud-billing`.
    pub source: String,
    /// The SKU or meter it was read from, as the catalog names it.
    pub sku: String,
    /// The price as the catalog quotes it, before normalising (`0.0405 USD per 1 Hour`).
    pub quoted: String,
    /// When the catalog says this price took effect.
    pub effective: String,
    /// When it was read (RFC 3339).
    pub read_at: String,
}

/// Where one figure of a provider's sheet came from.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum FigureSource {
    /// Read from a catalog.
    Read(ReadFigure),
    /// Not read: `default` (the provider's built-in figure, whose source is beside it in
    /// the provider's `pricing.rs`) or `config` (`[providers.NAME.price]`).
    Given { source: &'static str },
}

impl FigureSource {
    pub const DEFAULT: FigureSource = FigureSource::Given { source: "default" };
    pub const CONFIG: FigureSource = FigureSource::Given { source: "config" };
}

/// A provider's price sheet and, by figure name, where each figure it was built from came
/// from.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Pricing {
    pub sheet: PriceSheet,
    pub sources: BTreeMap<String, FigureSource>,
}

impl Pricing {
    /// A configured sheet (`[providers.NAME.price]`): every figure of it from the config.
    pub fn configured(sheet: PriceSheet) -> Pricing {
        let names = [VCPU_HOUR.to_string(), GB_HOUR.to_string()]
            .into_iter()
            .chain(sheet.gpu_hour.keys().map(|kind| gpu_hour(kind)));
        Pricing {
            sources: names.map(|n| (n, FigureSource::CONFIG)).collect(),
            sheet,
        }
    }
}

/// Every figure read, by kind, region and figure name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReadPrices {
    figures: BTreeMap<(String, String, String), ReadFigure>,
}

impl ReadPrices {
    /// The figures of a price file; an error names the entry (`figures[3]`) that is not a
    /// price or that gives a figure an earlier entry gave.
    pub fn new(figures: Vec<ReadFigure>) -> Result<ReadPrices, String> {
        let mut read = ReadPrices::default();
        for (i, f) in figures.into_iter().enumerate() {
            if !f.usd_per_hour.is_finite() || f.usd_per_hour < 0.0 {
                return Err(format!(
                    "figures[{i}].usd_per_hour: {} is not a price (USD per hour, 0 or more)",
                    f.usd_per_hour
                ));
            }
            let key = (f.kind.clone(), f.region.clone(), f.figure.clone());
            if read.figures.contains_key(&key) {
                return Err(format!(
                    "figures[{i}]: {} {} {} is given by an earlier entry too",
                    key.0, key.1, key.2
                ));
            }
            read.figures.insert(key, f);
        }
        Ok(read)
    }

    /// Every figure, ordered by kind, region and name.
    pub fn all(&self) -> impl Iterator<Item = &ReadFigure> {
        self.figures.values()
    }

    pub fn is_empty(&self) -> bool {
        self.figures.is_empty()
    }

    /// What a provider of `kind` in `region` builds its sheet from.
    pub fn figures<'a>(&'a self, kind: &'a str, region: &'a str) -> Figures<'a> {
        Figures {
            read: self,
            kind,
            region,
            sources: BTreeMap::new(),
        }
    }
}

/// The figures one provider builds its sheet from: each read figure over the provider's
/// default, noting where each figure asked for came from.
pub struct Figures<'a> {
    read: &'a ReadPrices,
    kind: &'a str,
    region: &'a str,
    sources: BTreeMap<String, FigureSource>,
}

impl Figures<'_> {
    /// `name`'s figure: as read from a catalog for this kind and region, else `default`.
    pub fn get(&mut self, name: &str, default: f64) -> f64 {
        let key = (
            self.kind.to_string(),
            self.region.to_string(),
            name.to_string(),
        );
        let (value, source) = match self.read.figures.get(&key) {
            Some(f) => (f.usd_per_hour, FigureSource::Read(f.clone())),
            None => (default, FigureSource::DEFAULT),
        };
        self.sources.insert(name.to_string(), source);
        value
    }

    /// `sheet`, with where the figures asked for came from.
    pub fn pricing(self, sheet: PriceSheet) -> Pricing {
        Pricing {
            sheet,
            sources: self.sources,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figure(kind: &str, region: &str, name: &str, usd: f64) -> ReadFigure {
        ReadFigure {
            kind: kind.into(),
            region: region.into(),
            figure: name.into(),
            usd_per_hour: usd,
            source: "azure-retail-prices".into(),
            sku: "Standard vCPU Duration".into(),
            quoted: format!("{usd} USD per 1 Hour"),
            effective: "2021-06-08T00:00:00Z".into(),
            read_at: "2026-12-03T10:00:00Z".into(),
        }
    }

    #[test]
    fn a_read_figure_replaces_the_default_of_its_kind_and_region_only() {
        let read = ReadPrices::new(vec![figure("aci", "eastus", VCPU_HOUR, 0.0405)]).unwrap();
        let mut f = read.figures("aci", "eastus");
        assert_eq!(f.get(VCPU_HOUR, 0.05), 0.0405);
        assert_eq!(f.get(GB_HOUR, 0.00445), 0.00445);
        let pricing = f.pricing(PriceSheet::default());
        assert_eq!(
            pricing.sources[VCPU_HOUR],
            FigureSource::Read(figure("aci", "eastus", VCPU_HOUR, 0.0405))
        );
        assert_eq!(pricing.sources[GB_HOUR], FigureSource::DEFAULT);
        // Another region, or another kind, keeps its default.
        assert_eq!(read.figures("aci", "westeurope").get(VCPU_HOUR, 0.05), 0.05);
        assert_eq!(read.figures("aca", "eastus").get(VCPU_HOUR, 0.0864), 0.0864);
    }

    #[test]
    fn sources_serialise_as_the_figure_or_where_it_was_given() {
        let json = |s: &FigureSource| serde_json::to_value(s).unwrap();
        assert_eq!(
            json(&FigureSource::DEFAULT),
            serde_json::json!({"source": "default"})
        );
        let read = json(&FigureSource::Read(figure(
            "aci", "eastus", VCPU_HOUR, 0.0405,
        )));
        assert_eq!(read["sku"], "Standard vCPU Duration");
        assert_eq!(read["usd_per_hour"], 0.0405);
        let configured = Pricing::configured(PriceSheet {
            gpu_hour: [("V100".to_string(), 3.0)].into(),
            ..PriceSheet::default()
        });
        let names: Vec<&str> = configured.sources.keys().map(String::as_str).collect();
        assert_eq!(names, ["gb_hour", "gpu_hour.V100", "vcpu_hour"]);
        assert!(configured
            .sources
            .values()
            .all(|s| *s == FigureSource::CONFIG));
    }

    #[test]
    fn a_bad_entry_is_named() {
        let err = ReadPrices::new(vec![figure("aci", "eastus", VCPU_HOUR, -1.0)]).unwrap_err();
        assert!(err.starts_with("figures[0].usd_per_hour"), "{err}");
        let twice = vec![
            figure("aci", "eastus", VCPU_HOUR, 0.04),
            figure("aci", "eastus", GB_HOUR, 0.004),
            figure("aci", "eastus", VCPU_HOUR, 0.05),
        ];
        let err = ReadPrices::new(twice).unwrap_err();
        assert!(err.starts_with("figures[2]:"), "{err}");
    }
}
