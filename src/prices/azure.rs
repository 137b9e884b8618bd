//! The Azure Retail Prices API (`GET {azure_url}/api/retail/prices`, no credentials), for the
//! `aci` and `aca` providers' sheets.
//!
//! One query per service and region, `$filter=serviceName eq '...' and armRegionName eq
//! '...' and priceType eq 'Consumption'`, followed through its `NextPageLink`s. Each item
//! is one price of one meter (`meterName`, `meterId`) in `retailPrice` USD per
//! `unitOfMeasure` ("1 Hour", "1 GB Hour", "1 Second", "1 GiB Second", "100 Seconds"), as of
//! `effectiveStartDate`; a meter with a free grant has a 0 price below its
//! `tierMinimumUnits`, and the grant (the subscription's, not one job's) is not counted.
//! Meter names: Microsoft Learn's Container Instances and Container Apps pricing pages
//! and the API's answers (tests/prices/SOURCE.md).

use offload_provider::figures::{self, ReadFigure};
use serde::Deserialize;

use super::{fetch, Read, Want};

pub const SOURCE: &str = "azure-retail-prices";

/// The service each kind is priced under.
fn service(kind: &str) -> &'static str {
    match kind {
        "aci" => "Container Instances",
        _ => "Azure Container Apps",
    }
}

/// (figure, meterName) for each figure of `kind` the catalog gives.
fn meters(kind: &str) -> Vec<(String, &'static str)> {
    match kind {
        // Linux, Standard SKU (the Windows software meter is on top of these, for Windows
        // groups only); Spot groups; GPU groups (retired by Azure on 14 July 2025) add
        // their vGPU meter.
        "aci" => vec![
            (figures::VCPU_HOUR.into(), "Standard vCPU Duration"),
            (figures::GB_HOUR.into(), "Standard Memory Duration"),
            (
                figures::SPOT_VCPU_HOUR.into(),
                "Standard Spot vCPU Duration",
            ),
            (
                figures::SPOT_GB_HOUR.into(),
                "Standard Spot Memory Duration",
            ),
            (figures::gpu_hour("K80"), "K80 vGPU Duration"),
            (figures::gpu_hour("P100"), "P100 vGPU Duration"),
            (figures::gpu_hour("V100"), "V100 vGPU Duration"),
        ],
        // Consumption plan (SKU "Standard"), the active rate jobs are billed at; serverless
        // GPUs on top of the replica's vCPU and memory.
        _ => vec![
            (figures::VCPU_HOUR.into(), "Standard vCPU Active Usage"),
            (figures::GB_HOUR.into(), "Standard Memory Active Usage"),
            (
                figures::gpu_hour("nvidia-tesla-t4"),
                "Standard NC T4 v3 GPU Usage",
            ),
            (
                figures::gpu_hour("nvidia-tesla-a100"),
                "Standard NC A100 v4 GPU Usage",
            ),
        ],
    }
}

/// One page of the API's answer.
#[derive(Deserialize)]
struct Page {
    #[serde(rename = "Items")]
    items: Vec<Item>,
    #[serde(rename = "NextPageLink")]
    next_page_link: Option<String>,
}

/// One price of one meter.
#[derive(Deserialize, Clone)]
#[serde(rename_all = "camelCase")]
struct Item {
    currency_code: String,
    #[serde(default)]
    tier_minimum_units: f64,
    retail_price: f64,
    arm_region_name: String,
    effective_start_date: String,
    meter_id: String,
    meter_name: String,
    sku_name: String,
    unit_of_measure: String,
    #[serde(rename = "type")]
    price_type: String,
}

/// The most pages one query may take: the services' answers are a page or two.
const MAX_PAGES: usize = 20;

pub(super) async fn read(
    http: &reqwest::Client,
    base: &str,
    wants: &[Want],
    now: &str,
) -> Result<Read, String> {
    let mut read = Read::default();
    for want in wants {
        let filter = format!(
            "serviceName eq '{}' and armRegionName eq '{}' and priceType eq 'Consumption'",
            service(want.kind),
            want.region
        );
        let what = format!("{} in {}", service(want.kind), want.region);
        let mut request = http
            .get(format!("{}/api/retail/prices", base.trim_end_matches('/')))
            .query(&[("$filter", filter.as_str())]);
        let mut items = vec![];
        for page in 1.. {
            if page > MAX_PAGES {
                return Err(format!("{what}: more than {MAX_PAGES} pages"));
            }
            let answer: Page = fetch(request, &format!("{what}, page {page}")).await?;
            items.extend(answer.items);
            match answer.next_page_link.filter(|l| !l.is_empty()) {
                Some(next) => request = http.get(next),
                None => break,
            }
        }
        let found = pick(want, &items, now)?;
        read.figures.extend(found.figures);
        read.missing.extend(found.missing);
    }
    Ok(read)
}

/// The figures `want` needs, from its service's items.
fn pick(want: &Want, items: &[Item], now: &str) -> Result<Read, String> {
    let mut read = Read::default();
    for (figure, meter) in meters(want.kind) {
        let mine: Vec<&Item> = items
            .iter()
            .filter(|i| {
                i.meter_name == meter
                    && i.arm_region_name == want.region
                    && i.price_type == "Consumption"
                    && i.currency_code == "USD"
            })
            .collect();
        // The newest price; of its tiers, the first that is not a free grant.
        let Some(newest) = mine.iter().map(|i| &i.effective_start_date).max() else {
            read.missing.push(format!(
                "{SOURCE}: {} in {} has no meter \"{meter}\": {figure} keeps its default",
                want.kind, want.region
            ));
            continue;
        };
        let mut current: Vec<&Item> = mine
            .into_iter()
            .filter(|i| &i.effective_start_date == newest)
            .collect();
        current.sort_by(|a, b| a.tier_minimum_units.total_cmp(&b.tier_minimum_units));
        let item = current
            .iter()
            .find(|i| i.retail_price > 0.0)
            .unwrap_or(&current[0]);
        let per_hour = per_hour(item.retail_price, &item.unit_of_measure, &figure)
            .map_err(|e| format!("meter \"{meter}\" in {}: {e}", want.region))?;
        read.figures.push(ReadFigure {
            kind: want.kind.into(),
            region: want.region.clone(),
            figure,
            usd_per_hour: per_hour,
            source: SOURCE.into(),
            sku: format!("{meter} (SKU {}, meter {})", item.sku_name, item.meter_id),
            quoted: format!("{} USD per {}", item.retail_price, item.unit_of_measure),
            effective: item.effective_start_date.clone(),
            read_at: now.into(),
        });
    }
    Ok(read)
}

/// `price` per `unit` ("100 Seconds", "1 GB Hour") as USD per hour of `figure`'s unit. A
/// unit that is not a count of seconds or hours, or whose memory-ness does not match the
/// figure's, means the catalog changed: an error, not a guess.
fn per_hour(price: f64, unit: &str, figure: &str) -> Result<f64, String> {
    let not = |why: &str| format!("unit \"{unit}\" {why}");
    let mut words = unit.split_whitespace();
    let count: f64 = words
        .next()
        .and_then(|n| n.parse().ok())
        .filter(|n: &f64| *n > 0.0)
        .ok_or_else(|| not("does not start with a count"))?;
    let mut rest: Vec<&str> = words.collect();
    let memory = matches!(rest.first(), Some(&"GB") | Some(&"GiB"));
    if memory {
        rest.remove(0);
    }
    if memory != (figure.contains("gb_hour")) {
        return Err(not(&format!("is not a unit of {figure}")));
    }
    let seconds = match rest.as_slice() {
        ["Hour"] | ["Hours"] => 3600.0,
        ["Minute"] | ["Minutes"] => 60.0,
        ["Second"] | ["Seconds"] => 1.0,
        _ => return Err(not("is not a time")),
    };
    Ok(price / count * 3600.0 / seconds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_are_normalised_by_their_unit() {
        let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
        assert!(close(
            per_hour(0.0405, "1 Hour", "vcpu_hour").unwrap(),
            0.0405
        ));
        assert!(close(
            per_hour(0.00445, "1 GB Hour", "gb_hour").unwrap(),
            0.00445
        ));
        assert!(close(
            per_hour(0.000024, "1 Second", "vcpu_hour").unwrap(),
            0.0864
        ));
        assert!(close(
            per_hour(0.000003, "1 GiB Second", "gb_hour").unwrap(),
            0.0108
        ));
        assert!(close(
            per_hour(0.085, "100 Seconds", "gpu_hour.V100").unwrap(),
            3.06
        ));
        for (unit, figure) in [
            ("1/Month", "vcpu_hour"),
            ("1M", "vcpu_hour"),
            ("1 GB Hour", "vcpu_hour"),
            ("1 Hour", "gb_hour"),
            ("1 GB/Month", "gb_hour"),
        ] {
            let e = per_hour(1.0, unit, figure).unwrap_err();
            assert!(e.contains(unit), "{e}");
        }
    }

    fn item(meter: &str, price: f64, tier: f64, effective: &str) -> Item {
        Item {
            currency_code: "USD".into(),
            tier_minimum_units: tier,
            retail_price: price,
            arm_region_name: "westeurope".into(),
            effective_start_date: effective.into(),
            meter_id: "m".into(),
            meter_name: meter.into(),
            sku_name: "Standard".into(),
            unit_of_measure: "1 Second".into(),
            price_type: "Consumption".into(),
        }
    }

    #[test]
    fn the_newest_price_past_the_free_grant_is_taken_and_a_missing_meter_is_said() {
        let want = Want {
            kind: "aca",
            region: "westeurope".into(),
        };
        let items = [
            item(
                "Standard vCPU Active Usage",
                0.0,
                0.0,
                "2024-01-01T00:00:00Z",
            ),
            item(
                "Standard vCPU Active Usage",
                0.000034,
                180000.0,
                "2024-01-01T00:00:00Z",
            ),
            item(
                "Standard vCPU Active Usage",
                0.00003,
                180000.0,
                "2022-01-01T00:00:00Z",
            ),
        ];
        let read = pick(&want, &items, "now").unwrap();
        assert_eq!(read.figures.len(), 1);
        let f = &read.figures[0];
        assert_eq!(
            (f.figure.as_str(), f.effective.as_str()),
            ("vcpu_hour", "2024-01-01T00:00:00Z")
        );
        assert!((f.usd_per_hour - 0.000034 * 3600.0).abs() < 1e-12);
        assert_eq!(f.quoted, "0.000034 USD per 1 Second");
        // Memory and both GPUs are not in these items: each is said, and keeps its default.
        assert_eq!(read.missing.len(), 3, "{:?}", read.missing);
        assert!(read.missing[0].contains("Standard Memory Active Usage"));
    }
}
