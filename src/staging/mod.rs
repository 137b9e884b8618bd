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
pub(crate) mod net;

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
/// prefix `s3://b/in` takes `s3://b/in/x`, not `s3://b/inx`). Compared as text, case and
/// all, as the served OpenAPI document's pattern ([`url_pattern`]) compares.
pub fn allowed(prefixes: &[String], url: &str) -> bool {
    prefixes.iter().any(|prefix| {
        url == prefix
            || url.strip_prefix(prefix.as_str()).is_some_and(|tail| {
                prefix.ends_with('/') || tail.starts_with('/')
            })
    })
}

/// A pattern (ECMA-262 and Rust alike) of the URLs under `prefixes` as [`allowed`] takes
/// them, without `.` or `..` segments; `None` when there are none.
pub fn url_pattern(prefixes: &[String]) -> Option<String> {
    const SEGMENT: &str = r"([^/\x00.?#][^/\x00?#]*|\.[^/\x00.?#][^/\x00?#]*|\.\.[^/\x00?#]+)?";
    let alternatives: Vec<String> = prefixes
        .iter()
        .map(|p| {
            let escaped = regex::escape(p);
            match p.ends_with('/') {
                true => format!("{escaped}{SEGMENT}(/{SEGMENT})*"),
                false => format!("{escaped}(/{SEGMENT})*"),
            }
        })
        .collect();
    (!alternatives.is_empty()).then(|| format!("^({})([?#][^\x00]*)?$", alternatives.join("|")))
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
        assert!(!allowed(&list, "S3://BUCKET/in/x"));
        assert!(allowed(&list, "s3://bucket/in"));
        assert!(!allowed(&list, "s3://bucket/inx"));
        assert!(!allowed(&list, "s3://bucket/In/x"));
        assert!(!allowed(&list, "s3://bucket2/in/x"));
        assert!(allowed(&list, "file:///srv/data/a/b"));
        assert!(!allowed(&list, "file:///srv/database"));
        assert!(!allowed(&[], "s3://bucket/in/x"), "nothing by default");
        let whole = vec!["gs://b".to_string()];
        assert!(allowed(&whole, "gs://b"));
        assert!(allowed(&whole, "gs://b/any/thing"));
        assert!(!allowed(&whole, "gs://bb/x"));
    }

    /// The served document's pattern takes what the server takes, and no more.
    #[test]
    fn the_url_pattern_agrees_with_the_allow_list() {
        let list = vec!["s3://bucket/in".to_string(), "file:///srv/data/".to_string()];
        let pattern = regex::Regex::new(&url_pattern(&list).unwrap()).unwrap();
        for url in [
            "s3://bucket/in", "s3://bucket/in/x", "s3://bucket/in/a/b.txt", "file:///srv/data/x",
            "s3://bucket/inx", "s3://bucket/in/../x", "s3://bucket/in/./x", "S3://bucket/in/x",
            "file:///srv/data/..", "s3://bucket/in/.hidden", "s3://bucket/in/..x",
        ] {
            let normal = !url.split('/').any(|s| s == "." || s == "..");
            assert_eq!(pattern.is_match(url), allowed(&list, url) && normal, "{url}");
        }
        assert_eq!(url_pattern(&[]), None);
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
