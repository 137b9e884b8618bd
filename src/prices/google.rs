//! The Google Cloud Billing Catalog API (`GET {google_url}/v1/services/{id}/skus?key=...`),
//! for the `cloudrun` provider's sheet (Cloud Run, service 152E-C115-5142) and the
//! `kubernetes` provider's on GKE Autopilot (Kubernetes Engine, service CCD8-9BF1-090E).
//!
//! The API needs an API key (`prices.google_api_key`); without one this catalog is skipped,
//! and the refresh says so. Each SKU has a `description` ("Jobs CPU in us-central1",
//! "Autopilot Pod mCPU Requests (us-central1)"), its `serviceRegions` and `pricingInfo`,
//! whose `pricingExpression` prices one `usageUnit` ("s", "h", "GiBy.s", "GiBy.h") in
//! `tieredRates` of `units` + `nanos` USD, as of `effectiveTime`; a free tier is a first
//! rate of 0, and is the billing account's, not one job's, so the first paid rate is taken.
//! Autopilot's CPU SKUs are per mCPU, a thousandth of a vCPU. Paged by `nextPageToken`.
//! GPUs are not read: no Cloud Run jobs GPU SKU is known here, and Autopilot GPU pods bill
//! their node, not a per-GPU figure.

use offload_provider::figures::{self, ReadFigure};
use serde::Deserialize;

use super::{fetch, Read, Want};

pub const SOURCE: &str = "google-cloud-billing";

/// The catalog's service id for each kind.
fn service(kind: &str) -> &'static str {
    match kind {
        "cloudrun" => "152E-C115-5142",
        _ => "CCD8-9BF1-090E",
    }
}

/// (figure, SKU description) for each figure of `kind` in `region` the catalog gives.
fn descriptions(kind: &str, region: &str) -> Vec<(&'static str, String)> {
    match kind {
        // Jobs are billed at these (instance-based) rates.
        "cloudrun" => vec![
            (figures::VCPU_HOUR, format!("Jobs CPU in {region}")),
            (figures::GB_HOUR, format!("Jobs Memory in {region}")),
        ],
        // General-purpose Autopilot Pods, and Spot Pods.
        _ => vec![
            (
                figures::VCPU_HOUR,
                format!("Autopilot Pod mCPU Requests ({region})"),
            ),
            (
                figures::GB_HOUR,
                format!("Autopilot Pod Memory Requests ({region})"),
            ),
            (
                figures::SPOT_VCPU_HOUR,
                format!("Autopilot Spot Pod mCPU Requests ({region})"),
            ),
            (
                figures::SPOT_GB_HOUR,
                format!("Autopilot Spot Pod Memory Requests ({region})"),
            ),
        ],
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Page {
    #[serde(default)]
    skus: Vec<Sku>,
    #[serde(default)]
    next_page_token: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Sku {
    sku_id: String,
    description: String,
    #[serde(default)]
    service_regions: Vec<String>,
    #[serde(default)]
    pricing_info: Vec<PricingInfo>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PricingInfo {
    effective_time: String,
    pricing_expression: Expression,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Expression {
    usage_unit: String,
    tiered_rates: Vec<Rate>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Rate {
    #[serde(default)]
    start_usage_amount: f64,
    unit_price: Money,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Money {
    currency_code: String,
    /// Whole units, an int64 as a JSON string.
    #[serde(default)]
    units: String,
    #[serde(default)]
    nanos: i64,
}

/// The most pages one service may take.
const MAX_PAGES: usize = 50;

pub(super) async fn read(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    wants: &[Want],
    now: &str,
) -> Result<Read, String> {
    let mut read = Read::default();
    let mut services: Vec<&str> = wants.iter().map(|w| service(w.kind)).collect();
    services.dedup();
    for id in services {
        let mut skus = vec![];
        let mut token = String::new();
        for page in 1.. {
            if page > MAX_PAGES {
                return Err(format!("services/{id}/skus: more than {MAX_PAGES} pages"));
            }
            let mut query = vec![("currencyCode", "USD"), ("pageSize", "5000"), ("key", key)];
            if !token.is_empty() {
                query.push(("pageToken", token.as_str()));
            }
            let request = http
                .get(format!(
                    "{}/v1/services/{id}/skus",
                    base.trim_end_matches('/')
                ))
                .query(&query);
            // An error answer that quoted the key back would put it in the logs: not so.
            let answer: Page = fetch(request, &format!("services/{id}/skus, page {page}"))
                .await
                .map_err(|e| e.replace(key, "<the API key>"))?;
            skus.extend(answer.skus);
            token = answer.next_page_token;
            if token.is_empty() {
                break;
            }
        }
        for want in wants.iter().filter(|w| service(w.kind) == id) {
            let found = pick(want, &skus, now)?;
            read.figures.extend(found.figures);
            read.missing.extend(found.missing);
        }
    }
    Ok(read)
}

fn pick(want: &Want, skus: &[Sku], now: &str) -> Result<Read, String> {
    let mut read = Read::default();
    for (figure, description) in descriptions(want.kind, &want.region) {
        let sku = skus.iter().find(|s| {
            s.description == description
                && (s.service_regions.is_empty() || s.service_regions.contains(&want.region))
        });
        let Some(sku) = sku else {
            read.missing.push(format!(
                "{SOURCE}: {} in {} has no SKU \"{description}\": {figure} keeps its default",
                want.kind, want.region
            ));
            continue;
        };
        let what = |e: String| format!("SKU {} \"{description}\": {e}", sku.sku_id);
        let info = sku
            .pricing_info
            .iter()
            .max_by(|a, b| a.effective_time.cmp(&b.effective_time))
            .ok_or_else(|| what("no pricingInfo".into()))?;
        let expression = &info.pricing_expression;
        let mut rates: Vec<&Rate> = expression.tiered_rates.iter().collect();
        rates.sort_by(|a, b| a.start_usage_amount.total_cmp(&b.start_usage_amount));
        let price = |r: &Rate| -> Result<f64, String> {
            if r.unit_price.currency_code != "USD" {
                return Err(format!("priced in {}", r.unit_price.currency_code));
            }
            let units: f64 = match r.unit_price.units.as_str() {
                "" => 0.0,
                u => u
                    .parse()
                    .map_err(|_| format!("units {u:?} is not a number"))?,
            };
            Ok(units + r.unit_price.nanos as f64 / 1e9)
        };
        let mut chosen = None;
        for rate in &rates {
            let usd = price(rate).map_err(what)?;
            if chosen.is_none() || usd > 0.0 {
                chosen = Some(usd);
            }
            if usd > 0.0 {
                break;
            }
        }
        let usd = chosen.ok_or_else(|| what("no tieredRates".into()))?;
        let per_unit = if description.contains("mCPU") {
            1000.0
        } else {
            1.0
        };
        let usd_per_hour =
            per_hour(usd * per_unit, &expression.usage_unit, figure).map_err(what)?;
        read.figures.push(ReadFigure {
            kind: want.kind.into(),
            region: want.region.clone(),
            figure: figure.into(),
            usd_per_hour,
            source: SOURCE.into(),
            sku: format!("{} ({description})", sku.sku_id),
            quoted: format!("{usd} USD per {}", expression.usage_unit),
            effective: info.effective_time.clone(),
            read_at: now.into(),
        });
    }
    Ok(read)
}

/// `price` per `unit` ("s", "h", "GiBy.s", "GiBy.h") as USD per hour of `figure`'s unit; a
/// unit that is not that, or whose memory-ness does not match the figure's, is an error.
fn per_hour(price: f64, unit: &str, figure: &str) -> Result<f64, String> {
    let (memory, time) = match unit.strip_prefix("GiBy.") {
        Some(time) => (true, time),
        None => (false, unit),
    };
    if memory != figure.contains("gb_hour") {
        return Err(format!("usage unit \"{unit}\" is not a unit of {figure}"));
    }
    let seconds = match time {
        "h" => 3600.0,
        "min" => 60.0,
        "s" => 1.0,
        _ => return Err(format!("usage unit \"{unit}\" is not a time")),
    };
    Ok(price * 3600.0 / seconds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_are_normalised_by_their_unit() {
        let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
        assert!(close(per_hour(0.000018, "s", "vcpu_hour").unwrap(), 0.0648));
        assert!(close(
            per_hour(0.000002, "GiBy.s", "gb_hour").unwrap(),
            0.0072
        ));
        assert!(close(per_hour(0.0445, "h", "vcpu_hour").unwrap(), 0.0445));
        assert!(close(
            per_hour(0.0049225, "GiBy.h", "gb_hour").unwrap(),
            0.0049225
        ));
        for (unit, figure) in [
            ("GiBy.mo", "gb_hour"),
            ("h", "gb_hour"),
            ("GiBy.h", "vcpu_hour"),
            ("count", "vcpu_hour"),
        ] {
            let e = per_hour(1.0, unit, figure).unwrap_err();
            assert!(e.contains(unit), "{e}");
        }
    }

    #[test]
    fn the_first_paid_tier_is_taken_and_mcpu_is_a_thousandth_of_a_vcpu() {
        let page: Page = serde_json::from_value(serde_json::json!({"skus": [
            {"skuId": "A", "description": "Autopilot Pod mCPU Requests (us-central1)",
             "serviceRegions": ["us-central1"],
             "pricingInfo": [{"effectiveTime": "2026-01-01T00:00:00Z", "pricingExpression": {
                 "usageUnit": "h", "tieredRates": [
                     {"startUsageAmount": 1000, "unitPrice": {"currencyCode": "USD", "units": "0", "nanos": 40000}},
                     {"startUsageAmount": 0, "unitPrice": {"currencyCode": "USD", "units": "0", "nanos": 0}},
                 ]}}]},
        ]}))
        .unwrap();
        let want = Want {
            kind: "kubernetes",
            region: "us-central1".into(),
        };
        let read = pick(&want, &page.skus, "now").unwrap();
        assert_eq!(read.figures.len(), 1);
        assert!(
            (read.figures[0].usd_per_hour - 0.04).abs() < 1e-12,
            "{:?}",
            read.figures
        );
        assert_eq!(read.missing.len(), 3);
        // Another region's SKU is not this region's.
        let other = Want {
            kind: "kubernetes",
            region: "europe-west1".into(),
        };
        assert!(pick(&other, &page.skus, "now").unwrap().figures.is_empty());
    }
}
