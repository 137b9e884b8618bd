//! Staging: what a job of several steps may download and upload, and the filer that does it.
//!
//! The filer (`offload filer stage-in|stage-out`, [`filer`]) is a step the gateway adds
//! before a job's executors (when it has inputs) and after them (when it has outputs). It
//! acts with the deployment's credentials, never the job's, so which buckets and folders
//! each tenant's jobs may read and write is the operator's allow-list (`[staging.tenants]`,
//! nothing by default): [`Policy`] checks every URL at submit (a 400 naming the input or
//! output) and the filer checks it again before it touches anything. `http(s)` inputs never
//! reach loopback, link-local (cloud metadata) or private addresses unless
//! `staging.allow_private_addresses` says so.

pub mod filer;
mod net;

use serde::{Deserialize, Serialize};

use crate::model::steps::{scheme_of, Input, Output, StepsSpec, INPUT_SCHEMES};
use crate::model::FieldError;

/// What one tenant's jobs may reach: URL prefixes to read inputs from and write outputs to.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Policy {
    pub read: Vec<String>,
    pub write: Vec<String>,
    /// `http(s)` inputs may reach loopback, link-local and private addresses.
    pub private_addresses: bool,
}

/// Whether `url` lies under one of `prefixes`: equal to one, or under it as a folder (a
/// prefix `s3://b/in` takes `s3://b/in/x`, not `s3://b/inx`). Schemes and hosts compare
/// without case.
pub fn allowed(prefixes: &[String], url: &str) -> bool {
    let (url_head, url_rest) = split_head(url);
    prefixes.iter().any(|prefix| {
        let (head, rest) = split_head(prefix);
        head == url_head
            && (url_rest == rest
                || url_rest.strip_prefix(rest.as_str()).is_some_and(|tail| {
                    rest.ends_with('/') || rest.is_empty() || tail.starts_with('/')
                }))
    })
}

/// `scheme://host` lowercased, and the rest of the URL as it is.
fn split_head(url: &str) -> (String, String) {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let (host, path) = match rest.find('/') {
        Some(at) => rest.split_at(at),
        None => (rest, ""),
    };
    (
        format!("{}://{}", scheme.to_ascii_lowercase(), host.to_ascii_lowercase()),
        path.to_string(),
    )
}

impl Policy {
    /// Every input the tenant may not read and output it may not write, by field.
    pub fn problems(&self, steps: &StepsSpec) -> Vec<FieldError> {
        let mut errors = vec![];
        for (i, input) in steps.inputs.iter().enumerate() {
            if let (None, Some(url)) = (&input.content, &input.url) {
                if !allowed(&self.read, url) {
                    errors.push(FieldError::new(
                        format!("steps.inputs[{i}].url"),
                        format!("{url:?} is not under a prefix this tenant may read (staging.tenants.TENANT.read)"),
                    ));
                } else if let Err(why) = net::literal_host_allowed(url, self.private_addresses) {
                    errors.push(FieldError::new(format!("steps.inputs[{i}].url"), why));
                }
            }
        }
        for (i, output) in steps.outputs.iter().enumerate() {
            if !allowed(&self.write, &output.url) {
                errors.push(FieldError::new(
                    format!("steps.outputs[{i}].url"),
                    format!(
                        "{:?} is not under a prefix this tenant may write (staging.tenants.TENANT.write)",
                        output.url
                    ),
                ));
            }
        }
        errors
    }
}

/// Why an allow-list entry of the config is not one, if it is not: a URL of a scheme the
/// filer reads, with a bucket or host (or, for `file://`, an absolute folder).
pub fn prefix_problem(prefix: &str) -> Option<String> {
    let Some(scheme) = scheme_of(prefix, &INPUT_SCHEMES) else {
        return Some(format!(
            "{prefix:?} is not a URL of one of the schemes {}",
            INPUT_SCHEMES.join(", ")
        ));
    };
    let rest = prefix.split_once("://").map_or("", |(_, r)| r);
    if scheme == "file" && !rest.starts_with('/') {
        return Some(format!("{prefix:?}: a file:// prefix names an absolute folder (file:///srv/data/)"));
    }
    if rest.split('/').any(|s| s == "." || s == "..") {
        return Some(format!("{prefix:?} has . or .. in it"));
    }
    None
}

/// What a filer step is told: the files to move and what it may reach, as JSON in
/// [`crate::model::steps::FILER_PLAN_ENV`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub inputs: Vec<Input>,
    pub outputs: Vec<Output>,
    pub policy: Policy,
}

impl Plan {
    pub fn of(steps: &StepsSpec, policy: &Policy) -> Plan {
        Plan {
            inputs: steps.inputs.clone(),
            outputs: steps.outputs.clone(),
            policy: policy.clone(),
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a plan serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_folders_and_compare_schemes_and_hosts_without_case() {
        let list = vec!["s3://bucket/in".to_string(), "file:///srv/data/".to_string()];
        assert!(allowed(&list, "s3://bucket/in/x"));
        assert!(allowed(&list, "S3://BUCKET/in/x"));
        assert!(allowed(&list, "s3://bucket/in"));
        assert!(!allowed(&list, "s3://bucket/inx"));
        assert!(!allowed(&list, "s3://bucket/In/x"));
        assert!(!allowed(&list, "s3://bucket2/in/x"));
        assert!(allowed(&list, "file:///srv/data/a/b"));
        assert!(!allowed(&list, "file:///srv/database"));
        assert!(!allowed(&[], "s3://bucket/in/x"), "nothing by default");
        let whole = vec!["gs://b".to_string()];
        assert!(allowed(&whole, "gs://b/any/thing"));
        assert!(!allowed(&whole, "gs://bb/x"));
    }

    #[test]
    fn config_prefixes_must_be_urls_the_filer_reads() {
        assert_eq!(prefix_problem("s3://b/in/"), None);
        assert_eq!(prefix_problem("file:///srv/"), None);
        assert!(prefix_problem("ftp://x/").is_some());
        assert!(prefix_problem("file://relative/").is_some());
        assert!(prefix_problem("s3://b/../x").is_some());
    }
}
