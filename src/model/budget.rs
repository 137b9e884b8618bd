//! Budgets: spend limits on a tenant's jobs, or on those with one label value, per day and
//! per month (UTC). The shape is the same in the config (`[[budgets]]`) and in the API
//! (`PUT /v1/budgets`), and so is its validation.

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{patterns, FieldError};

/// The largest limit a budget takes, in dollars.
pub const MAX_USD: f64 = 1e9;

/// A spend limit. Admission charges each job's estimate against every budget it falls
/// under (its tenant's, and those whose label it carries) before it is dispatched; the
/// job's cost replaces the estimate once it ends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    /// The tenant whose jobs count.
    pub tenant: String,
    /// `KEY=VALUE`: only the tenant's jobs with this label count (`dag_id=etl`); absent,
    /// all of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Dollars a UTC day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usd_per_day: Option<f64>,
    /// Dollars a UTC calendar month.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usd_per_month: Option<f64>,
    /// What happens to a job that would take the spend past a limit: it waits `queued`
    /// until the period ends or spend frees up (`wait`), or its submit is refused with 429
    /// and Retry-After at the period's end (`refuse`).
    #[serde(default)]
    pub action: BudgetAction,
    /// Whether running jobs are stopped once their spend reaches a limit (by default a
    /// budget never stops a running job, it only holds back new ones).
    #[serde(default)]
    pub hard: bool,
}

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum BudgetAction {
    #[default]
    Wait,
    Refuse,
}

/// The two periods a budget may limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PeriodKind {
    Day,
    Month,
}

impl PeriodKind {
    pub const ALL: [PeriodKind; 2] = [PeriodKind::Day, PeriodKind::Month];

    pub fn as_str(self) -> &'static str {
        match self {
            PeriodKind::Day => "day",
            PeriodKind::Month => "month",
        }
    }

    /// The period of this kind that `at` falls in.
    pub fn at(self, at: DateTime<Utc>) -> Period {
        let day = at.date_naive();
        let start = match self {
            PeriodKind::Day => day,
            PeriodKind::Month => day.with_day(1).expect("every month has a first day"),
        };
        let end = match self {
            PeriodKind::Day => start.succ_opt().expect("a day after"),
            PeriodKind::Month => start
                .checked_add_months(chrono::Months::new(1))
                .expect("a month after"),
        };
        Period {
            kind: self,
            start: midnight(start),
            end: midnight(end),
        }
    }
}

fn midnight(day: NaiveDate) -> DateTime<Utc> {
    Utc.from_utc_datetime(&day.and_hms_opt(0, 0, 0).expect("midnight"))
}

/// One day or month, in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    pub kind: PeriodKind,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

impl Period {
    /// How the store names it: `day:2026-12-07`, `month:2026-12`.
    pub fn key(&self) -> String {
        match self.kind {
            PeriodKind::Day => format!("day:{}", self.start.format("%Y-%m-%d")),
            PeriodKind::Month => format!("month:{}", self.start.format("%Y-%m")),
        }
    }
}

impl Budget {
    /// Its name: the tenant, and `/KEY=VALUE` when it has a label (`analytics/dag_id=etl`).
    /// One budget per tenant and label.
    pub fn id(&self) -> String {
        match &self.label {
            Some(label) => format!("{}/{label}", self.tenant),
            None => self.tenant.clone(),
        }
    }

    /// Its label as a key and a value.
    pub fn label_pair(&self) -> Option<(&str, &str)> {
        self.label.as_deref().and_then(|l| l.split_once('='))
    }

    /// Its limit over a period of this kind, in dollars, if it has one.
    pub fn limit(&self, kind: PeriodKind) -> Option<f64> {
        match kind {
            PeriodKind::Day => self.usd_per_day,
            PeriodKind::Month => self.usd_per_month,
        }
    }

    /// Every bad field, each named as in the request (or the config, under `budgets[N]`).
    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut errors = vec![];
        if !patterns::BUDGET_TENANT.is_match(&self.tenant) {
            errors.push(FieldError::new(
                "tenant",
                "must be 1 to 253 characters, none of them a control character",
            ));
        }
        if let Some(label) = &self.label {
            if !patterns::BUDGET_LABEL.is_match(label) {
                errors.push(FieldError::new(
                    "label",
                    "must be KEY=VALUE, a key of 1 to 253 characters without `=` and a value of at most 1024, without NUL",
                ));
            }
        }
        if self.usd_per_day.is_none() && self.usd_per_month.is_none() {
            errors.push(FieldError::new(
                "usd_per_day",
                "a budget needs usd_per_day, usd_per_month or both",
            ));
        }
        for kind in PeriodKind::ALL {
            if let Some(limit) = self.limit(kind) {
                if !(limit > 0.0 && limit <= MAX_USD) {
                    errors.push(FieldError::new(
                        format!("usd_per_{}", kind.as_str()),
                        format!("must be more than 0 and at most {MAX_USD}"),
                    ));
                }
            }
        }
        match errors.is_empty() {
            true => Ok(()),
            false => Err(errors),
        }
    }
}

/// A budget as `GET /v1/budgets` shows it: its settings, and where each of its periods
/// stands now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BudgetStatus {
    /// The tenant, and `/KEY=VALUE` for a label's budget.
    pub id: String,
    #[serde(flatten)]
    pub budget: Budget,
    /// `config` for a budget from the config file (set again from it at each start), `api`
    /// for one set through `PUT /v1/budgets`.
    pub source: BudgetSource,
    pub periods: Vec<PeriodStatus>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BudgetSource {
    Config,
    Api,
}

impl BudgetSource {
    pub fn as_str(self) -> &'static str {
        match self {
            BudgetSource::Config => "config",
            BudgetSource::Api => "api",
        }
    }
}

/// Where one of a budget's periods stands, in dollars rounded to the micro-dollar.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PeriodStatus {
    pub period: PeriodKind,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub limit_usd: f64,
    /// What the jobs admitted in this period and ended since cost.
    pub spent_usd: f64,
    /// The estimates of the jobs admitted in this period that have not ended yet.
    pub committed_usd: f64,
    /// `limit_usd - spent_usd - committed_usd`, at least 0: the estimates that may still be
    /// admitted in this period.
    pub left_usd: f64,
    /// `(spent_usd + committed_usd) / limit_usd`: 0.8 and 1 are the thresholds the gateway
    /// tells of.
    pub used: f64,
}

/// Every budget the caller may see.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BudgetList {
    pub budgets: Vec<BudgetStatus>,
}

/// Dollars as whole micro-dollars, as the store counts spend.
pub fn micros(usd: f64) -> i64 {
    (usd * 1e6).round() as i64
}

/// Whole micro-dollars as dollars.
pub fn dollars(micros: i64) -> f64 {
    micros as f64 / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn periods_are_utc_days_and_calendar_months() {
        let p = PeriodKind::Day.at(at("2026-12-31T23:59:59Z"));
        assert_eq!(
            (p.start, p.end),
            (at("2026-12-31T00:00:00Z"), at("2027-01-01T00:00:00Z"))
        );
        assert_eq!(p.key(), "day:2026-12-31");
        let m = PeriodKind::Month.at(at("2026-02-14T10:00:00Z"));
        assert_eq!(
            (m.start, m.end),
            (at("2026-02-01T00:00:00Z"), at("2026-03-01T00:00:00Z"))
        );
        assert_eq!(m.key(), "month:2026-02");
    }

    #[test]
    fn a_budget_is_named_by_its_tenant_and_label() {
        let b = Budget {
            tenant: "analytics".into(),
            label: Some("dag_id=etl".into()),
            usd_per_day: Some(50.0),
            usd_per_month: None,
            action: BudgetAction::Wait,
            hard: false,
        };
        assert_eq!(b.id(), "analytics/dag_id=etl");
        assert_eq!(b.label_pair(), Some(("dag_id", "etl")));
    }

    #[test]
    fn a_bad_budget_names_each_bad_field() {
        let b = Budget {
            tenant: "".into(),
            label: Some("no-equals".into()),
            usd_per_day: Some(-1.0),
            usd_per_month: Some(f64::INFINITY),
            action: BudgetAction::Refuse,
            hard: true,
        };
        let fields: Vec<String> = b
            .validate()
            .unwrap_err()
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(fields, ["tenant", "label", "usd_per_day", "usd_per_month"]);
        let none = Budget {
            usd_per_day: None,
            usd_per_month: None,
            tenant: "t".into(),
            label: None,
            ..b
        };
        assert_eq!(none.validate().unwrap_err()[0].field, "usd_per_day");
    }
}
