//! `/v1/budgets`: every tenant reads its own budgets, with what each has spent and
//! committed in its current day and month; an admin token reads all of them and sets and
//! removes any.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use utoipa::IntoParams;

use super::auth::{Admin, Caller};
use super::body::JsonBody;
use super::error::{ApiError, Problem};
use super::AppState;
use crate::model::budget::{Budget, BudgetList, BudgetStatus};

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BudgetParams {
    /// Only this tenant's budgets (an admin's token reads every tenant's; any other, its own).
    tenant: Option<String>,
}

#[utoipa::path(
    get, path = "/v1/budgets", tag = "budgets", operation_id = "list_budgets",
    summary = "List budgets",
    description = "The budgets that hold the caller's tenant (an admin token: every tenant's), each with its current day's and month's limit, spend, committed estimates and what is left.",
    params(BudgetParams),
    responses((status = 200, body = BudgetList)),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(p): Query<BudgetParams>,
) -> Result<Json<BudgetList>, ApiError> {
    let own = caller.tenant.0;
    let budgets = state.engine.budgets().statuses().await?;
    let budgets = budgets
        .into_iter()
        .filter(|b| caller.admin || b.budget.tenant == own)
        .filter(|b| p.tenant.as_ref().is_none_or(|t| &b.budget.tenant == t))
        .collect();
    Ok(Json(BudgetList { budgets }))
}

#[utoipa::path(
    put, path = "/v1/budgets", tag = "budgets", operation_id = "put_budget",
    summary = "Set a budget",
    description = "Admin tokens only. Sets a spend limit per tenant, or per tenant and label value, per day and per month, replacing the one of the same tenant and label.",
    request_body = Budget,
    responses(
        (status = 200, description = "The budget as set, replacing the one of the same tenant and label", body = BudgetStatus),
        (status = 403, description = "The token is not an admin's", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn put(
    State(state): State<AppState>,
    Admin(by): Admin,
    JsonBody(budget): JsonBody<Budget>,
) -> Result<Json<BudgetStatus>, ApiError> {
    budget.validate().map_err(ApiError::invalid)?;
    let budgets = state.engine.budgets();
    let woken = budgets.put(&budget).await?;
    tracing::info!(budget = %budget.id(), by = %by.0, "budget set");
    woken.into_iter().for_each(|id| state.engine.poke(id));
    let id = budget.id();
    let status = budgets
        .statuses()
        .await?
        .into_iter()
        .find(|b| b.id == id)
        .ok_or_else(|| ApiError::new(StatusCode::CONFLICT, "the budget was removed meanwhile"))?;
    Ok(Json(status))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BudgetKey {
    /// The budget's tenant.
    tenant: String,
    /// The budget's label, `KEY=VALUE`; absent for the tenant's own budget.
    label: Option<String>,
}

#[utoipa::path(
    delete, path = "/v1/budgets", tag = "budgets", operation_id = "delete_budget",
    summary = "Remove a budget",
    description = "Admin tokens only. Removes the budget of a tenant and label; the jobs it held waiting are admitted again.",
    params(BudgetKey),
    responses(
        (status = 204, description = "Removed; its jobs waiting are admitted again"),
        (status = 403, description = "The token is not an admin's", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such budget", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn delete(
    State(state): State<AppState>,
    Admin(by): Admin,
    Query(key): Query<BudgetKey>,
) -> Result<StatusCode, ApiError> {
    let id = match &key.label {
        Some(label) => format!("{}/{label}", key.tenant),
        None => key.tenant.clone(),
    };
    let (found, woken) = state.engine.budgets().delete(&id).await?;
    woken.into_iter().for_each(|id| state.engine.poke(id));
    if found {
        tracing::info!(budget = %id, by = %by.0, "budget removed");
    }
    match found {
        true => Ok(StatusCode::NO_CONTENT),
        false => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("budget {id} not found"),
        )),
    }
}
