//! AWS errors translated into what the engine must do next.

use std::time::Duration;

use aws_sdk_ecs::error::{ProvideErrorMetadata, SdkError};
use offload_provider::ProviderError;

/// How long to back off after ECS says "Rate exceeded".
const THROTTLE_BACKOFF: Duration = Duration::from_secs(2);

/// An SDK error of any ECS or CloudWatch Logs operation.
pub fn classify<E, R>(op: &str, err: SdkError<E, R>) -> ProviderError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    match &err {
        SdkError::ServiceError(service) => {
            let e = service.err();
            let code = e.code().unwrap_or("");
            let message = e.message().unwrap_or("");
            let text = format!("{op}: {code}: {message}");
            classify_service(code, message, text)
        }
        // Sending failed before any answer: the network (or a fault the client calls
        // passing) is transient; no credentials, or a request the client could not make,
        // is the configuration's, and sent again fails again.
        SdkError::DispatchFailure(d) if !(d.is_io() || d.is_timeout() || d.as_other().is_some()) => {
            ProviderError::Config(format!("{op}: {}", messages(&err)))
        }
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            ProviderError::Transient(format!("{op}: {}", messages(&err)))
        }
        _ => ProviderError::Config(format!("{op}: {}", messages(&err))),
    }
}

/// The Display text of an error and its sources. Not their Debug text: an unreadable
/// response's Debug carries the raw body, and a RunTask answer echoes the job's env.
fn messages(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        text = format!("{text}: {e}");
        source = e.source();
    }
    text
}

fn classify_service(code: &str, message: &str, text: String) -> ProviderError {
    match code {
        "ThrottlingException" | "TooManyRequestsException" | "RequestLimitExceeded" => {
            ProviderError::Throttled {
                retry_after: THROTTLE_BACKOFF,
            }
        }
        _ if message.contains("Rate exceeded") => ProviderError::Throttled {
            retry_after: THROTTLE_BACKOFF,
        },
        _ if is_capacity(message) => ProviderError::Capacity(text),
        "ServerException" | "ServiceUnavailableException" | "InternalFailure" => {
            ProviderError::Transient(text)
        }
        "AccessDeniedException"
        | "UnrecognizedClientException"
        | "InvalidSignatureException"
        | "ExpiredTokenException"
        | "ClusterNotFoundException" => ProviderError::Config(text),
        "ResourceNotFoundException" => ProviderError::NotFound(text),
        _ if is_task_not_found(message) => ProviderError::NotFound(text),
        // ClientException, InvalidParameterException: ECS refused what was asked.
        _ => ProviderError::InvalidSpec(text),
    }
}

/// ECS's answer about a task it does not know (it forgets stopped tasks after about an
/// hour): StopTask's InvalidParameterException "The referenced task was not found."
fn is_task_not_found(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    message.contains("task was not found") || message.contains("task not found")
}

/// RunTask's per-task `failures[].reason` values that mean "not now, or not here".
pub fn is_capacity(reason: &str) -> bool {
    let reason = reason.to_ascii_lowercase();
    reason.contains("capacity is unavailable")
        || reason.contains("resource:") // RESOURCE:CPU, RESOURCE:MEMORY, RESOURCE:ENI
        || reason.contains("insufficient")
}

/// A RunTask answer with no task, only failures.
pub fn run_task_failure(reason: &str, detail: Option<&str>) -> ProviderError {
    let text = match detail {
        Some(d) if !d.is_empty() => format!("RunTask: {reason} ({d})"),
        _ => format!("RunTask: {reason}"),
    };
    if reason.contains("Rate exceeded") {
        ProviderError::Throttled {
            retry_after: THROTTLE_BACKOFF,
        }
    } else if is_capacity(reason) {
        ProviderError::Capacity(text)
    } else {
        ProviderError::InvalidSpec(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_codes_map_to_what_the_engine_does_next() {
        let c = |code, message: &str| classify_service(code, message, String::new());
        assert!(matches!(
            c("ThrottlingException", "Rate exceeded"),
            ProviderError::Throttled { .. }
        ));
        assert!(matches!(
            c("ClientException", "Rate exceeded"),
            ProviderError::Throttled { .. }
        ));
        assert!(matches!(
            c("ServerException", "oops"),
            ProviderError::Transient(_)
        ));
        assert!(matches!(
            c("AccessDeniedException", "no"),
            ProviderError::Config(_)
        ));
        assert!(matches!(
            c("InvalidParameterException", "bad"),
            ProviderError::InvalidSpec(_)
        ));
        assert!(matches!(
            c(
                "InvalidParameterException",
                "The referenced task was not found."
            ),
            ProviderError::NotFound(_)
        ));
        assert!(matches!(
            c("ClientException", "Task not found."),
            ProviderError::NotFound(_)
        ));
        assert!(matches!(
            c("ClientException", "Unable to describe task definition."),
            ProviderError::InvalidSpec(_)
        ));
    }

    #[test]
    fn run_task_failures_split_capacity_from_bad_requests() {
        let capacity = "Capacity is unavailable at this time. Please try again later or in a different availability zone";
        assert!(matches!(
            run_task_failure(capacity, None),
            ProviderError::Capacity(_)
        ));
        assert!(matches!(
            run_task_failure("RESOURCE:ENI", None),
            ProviderError::Capacity(_)
        ));
        assert!(matches!(
            run_task_failure("MISSING", None),
            ProviderError::InvalidSpec(_)
        ));
    }
}
