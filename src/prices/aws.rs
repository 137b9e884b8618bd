//! The AWS Price List Bulk API's offer files (no credentials), for the `ecs` provider's
//! sheet.
//!
//! The AmazonECS region index (`{aws_url}/offers/v1.0/aws/AmazonECS/current/region_index.json`)
//! names each region's current offer file; that file lists `products` by SKU, each with
//! its `attributes` (`usagetype` such as `USE1-Fargate-vCPU-Hours:perCPU`), and their
//! `terms.OnDemand` prices (`priceDimensions`, `pricePerUnit.USD` per `unit`, "hours"), as of
//! the term's `effectiveDate`. Fargate's Linux On-Demand usage types give the x86 and ARM
//! vCPU-hour and GB-hour. Fargate Spot is not in the price list (its prices float, and are
//! published only on the pricing page), so the Spot share stays the default.

use std::collections::BTreeMap;

use offload_provider::figures::{self, ReadFigure};
use serde::Deserialize;

use super::{fetch, Read, Want};

pub const SOURCE: &str = "aws-price-list";

/// (figure, usage type without its region prefix).
const USAGE_TYPES: [(&str, &str); 4] = [
    (figures::VCPU_HOUR, "Fargate-vCPU-Hours:perCPU"),
    (figures::GB_HOUR, "Fargate-GB-Hours"),
    (figures::ARM_VCPU_HOUR, "Fargate-ARM-vCPU-Hours:perCPU"),
    (figures::ARM_GB_HOUR, "Fargate-ARM-GB-Hours"),
];

#[derive(Deserialize)]
struct RegionIndex {
    regions: BTreeMap<String, RegionOffer>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RegionOffer {
    current_version_url: String,
}

#[derive(Deserialize)]
struct Offer {
    products: BTreeMap<String, Product>,
    terms: Terms,
}

#[derive(Deserialize)]
struct Product {
    #[serde(default)]
    attributes: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct Terms {
    #[serde(rename = "OnDemand", default)]
    on_demand: BTreeMap<String, BTreeMap<String, Term>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Term {
    effective_date: String,
    price_dimensions: BTreeMap<String, Dimension>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Dimension {
    unit: String,
    price_per_unit: BTreeMap<String, String>,
    #[serde(default)]
    begin_range: Option<String>,
}

pub(super) async fn read(
    http: &reqwest::Client,
    base: &str,
    wants: &[Want],
    now: &str,
) -> Result<Read, String> {
    let mut read = Read::default();
    if wants.is_empty() {
        return Ok(read);
    }
    let base = base.trim_end_matches('/');
    let index: RegionIndex = fetch(
        http.get(format!(
            "{base}/offers/v1.0/aws/AmazonECS/current/region_index.json"
        )),
        "the AmazonECS region index",
    )
    .await?;
    for want in wants {
        let offer = index
            .regions
            .get(&want.region)
            .ok_or_else(|| format!("the AmazonECS region index has no region {}", want.region))?;
        let what = format!("the AmazonECS offer file for {}", want.region);
        let offer: Offer = fetch(
            http.get(format!("{base}{}", offer.current_version_url)),
            &what,
        )
        .await?;
        let found = pick(want, &offer, now).map_err(|e| format!("{what}: {e}"))?;
        read.figures.extend(found.figures);
        read.missing.extend(found.missing);
    }
    Ok(read)
}

/// `USE1-Fargate-GB-Hours` without its region's prefix; a usage type without one as it is.
fn unprefixed(usage_type: &str) -> &str {
    match usage_type.split_once('-') {
        Some((prefix, rest))
            if prefix.len() <= 5
                && prefix
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit()) =>
        {
            rest
        }
        _ => usage_type,
    }
}

fn pick(want: &Want, offer: &Offer, now: &str) -> Result<Read, String> {
    let mut read = Read::default();
    for (figure, usage_type) in USAGE_TYPES {
        let products: Vec<(&String, &Product)> = offer
            .products
            .iter()
            .filter(|(_, p)| {
                p.attributes.get("usagetype").map(|u| unprefixed(u)) == Some(usage_type)
                    && p.attributes
                        .get("regionCode")
                        .is_none_or(|r| *r == want.region)
            })
            .collect();
        let mut prices = vec![];
        for (sku, product) in products {
            let terms = offer.on_demand(sku)?;
            for term in terms.values() {
                let dimension = term
                    .price_dimensions
                    .values()
                    .find(|d| d.begin_range.as_deref().is_none_or(|b| b == "0"))
                    .ok_or_else(|| format!("SKU {sku} has no first price dimension"))?;
                let quoted = dimension
                    .price_per_unit
                    .get("USD")
                    .ok_or_else(|| format!("SKU {sku} has no USD price"))?;
                let usd: f64 = quoted
                    .parse()
                    .map_err(|_| format!("SKU {sku}: {quoted:?} is not a price"))?;
                if !matches!(
                    dimension.unit.to_ascii_lowercase().as_str(),
                    "hours" | "hrs"
                ) {
                    return Err(format!(
                        "SKU {sku}: unit \"{}\" is not hours",
                        dimension.unit
                    ));
                }
                prices.push((usd, sku, product, term, quoted, &dimension.unit));
            }
        }
        match prices.as_slice() {
            [] => read.missing.push(format!(
                "{SOURCE}: ecs in {} has no usage type {usage_type}: {figure} keeps its default",
                want.region
            )),
            [(usd, sku, product, term, quoted, unit), rest @ ..] => {
                if let Some(other) = rest.iter().find(|p| p.0 != *usd) {
                    return Err(format!(
                        "{usage_type} has two prices: {quoted} (SKU {sku}) and {} (SKU {})",
                        other.4, other.1
                    ));
                }
                read.figures.push(ReadFigure {
                    kind: "ecs".into(),
                    region: want.region.clone(),
                    figure: figure.into(),
                    usd_per_hour: *usd,
                    source: SOURCE.into(),
                    sku: format!("{sku} ({})", product.attributes["usagetype"]),
                    quoted: format!("{quoted} USD per {unit}"),
                    effective: term.effective_date.clone(),
                    read_at: now.into(),
                });
            }
        }
    }
    Ok(read)
}

impl Offer {
    /// The On-Demand terms of `sku`.
    fn on_demand(&self, sku: &str) -> Result<&BTreeMap<String, Term>, String> {
        self.terms
            .on_demand
            .get(sku)
            .ok_or_else(|| format!("SKU {sku} has no On-Demand terms"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_prefixes_are_taken_off_usage_types() {
        assert_eq!(
            unprefixed("USE1-Fargate-vCPU-Hours:perCPU"),
            "Fargate-vCPU-Hours:perCPU"
        );
        assert_eq!(
            unprefixed("EUC1-Fargate-ARM-GB-Hours"),
            "Fargate-ARM-GB-Hours"
        );
        assert_eq!(unprefixed("Fargate-GB-Hours"), "Fargate-GB-Hours");
        // Spot and Windows usage types are other usage types, not these.
        assert_eq!(
            unprefixed("USE1-SpotUsage-Fargate-vCPU-Hours:perCPU"),
            "SpotUsage-Fargate-vCPU-Hours:perCPU"
        );
    }

    fn offer(products: serde_json::Value, terms: serde_json::Value) -> Offer {
        serde_json::from_value(
            serde_json::json!({"products": products, "terms": {"OnDemand": terms}}),
        )
        .unwrap()
    }

    fn term(usd: &str, unit: &str) -> serde_json::Value {
        serde_json::json!({"T": {"effectiveDate": "2026-11-01T00:00:00Z", "priceDimensions": {
            "D": {"unit": unit, "pricePerUnit": {"USD": usd}, "beginRange": "0"}}}})
    }

    #[test]
    fn a_usage_type_with_two_prices_or_a_unit_not_hours_is_an_error() {
        let want = Want {
            kind: "ecs",
            region: "us-east-1".into(),
        };
        let two = offer(
            serde_json::json!({
                "A": {"attributes": {"usagetype": "USE1-Fargate-GB-Hours"}},
                "B": {"attributes": {"usagetype": "USE1-Fargate-GB-Hours"}}}),
            serde_json::json!({"A": term("0.004445", "hours"), "B": term("0.005", "hours")}),
        );
        let e = pick(&want, &two, "now").err().unwrap();
        assert!(e.contains("two prices"), "{e}");
        let per_second = offer(
            serde_json::json!({"A": {"attributes": {"usagetype": "USE1-Fargate-GB-Hours"}}}),
            serde_json::json!({"A": term("0.0000012", "seconds")}),
        );
        let e = pick(&want, &per_second, "now").err().unwrap();
        assert!(e.contains("\"seconds\" is not hours"), "{e}");
        let read = pick(
            &want,
            &offer(
                serde_json::json!({"A": {"attributes": {"usagetype": "USE1-Fargate-GB-Hours"}}}),
                serde_json::json!({"A": term("0.0044450000", "hours")}),
            ),
            "now",
        )
        .unwrap();
        assert_eq!(read.figures[0].usd_per_hour, 0.004445);
        assert_eq!(read.missing.len(), 3, "{:?}", read.missing);
    }
}
