//! A job of several steps, the shape of a GA4GH TES task: executors that run one after
//! another, each in its own image, sharing the task's volumes, with inputs staged before the
//! first and outputs after the last by the gateway's filer (`crate::staging`). The types
//! keep TES's field names, so that the TES API (`crate::tes`) takes and gives them as they
//! are: one model of a task, not two.
//!
//! What is checked here depends on nothing but the spec (absolute paths, known URL schemes,
//! wildcards with their prefix); which URLs a tenant may reach is the deployment's
//! (`staging::Policy`), checked at submit and again by the filer.

use std::collections::BTreeMap;

use offload_provider::{Step, StepPlan, StepRole};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{limits, patterns, FieldError};

/// The executors, files and volumes of a job of several steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StepsSpec {
    /// Run one after another; the first that fails (unless it says `ignore_error`) ends
    /// the job.
    #[serde(deserialize_with = "super::objects")]
    pub executors: Vec<Executor>,
    /// Files downloaded (or written from `content`) before the first executor.
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "super::objects")]
    pub inputs: Vec<Input>,
    /// Files uploaded after the last executor.
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "super::objects")]
    pub outputs: Vec<Output>,
    /// Absolute directories every executor sees at the same path, empty at the start.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<String>,
}

/// One command of a job of several steps, and its environment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Executor {
    /// The container image (the local provider runs the command on the host instead).
    pub image: String,
    /// argv: the program and its arguments.
    pub command: Vec<String>,
    /// The absolute directory the command runs in; the image's own when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    /// An absolute path whose file is piped to the command's stdin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<String>,
    /// An absolute path the command's stdout is written to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout: Option<String>,
    /// An absolute path the command's stderr is written to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// A non-zero exit is recorded and the next executor runs all the same.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ignore_error: bool,
}

/// Whether an input or output is one file or a directory of them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum FileType {
    #[default]
    File,
    Directory,
}

impl FileType {
    fn is_file(&self) -> bool {
        *self == FileType::File
    }
}

/// A file (or directory) put in place before the first executor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Input {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Where it comes from: `s3://`, `gs://`, `az://` (Azure Blob), `http(s)://` or
    /// `file://`. Required unless `content` is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The absolute path the executors find it at.
    pub path: String,
    #[serde(default, rename = "type", skip_serializing_if = "FileType::is_file")]
    pub kind: FileType,
    /// The file's text, written as it is (`url` is then ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// Accepted and kept; every input is downloaded whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub streamable: Option<bool>,
}

/// A file (or directory, or files matching a pattern) uploaded after the last executor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Output {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Where it goes: `s3://`, `gs://`, `az://` (Azure Blob) or `file://`; for a directory
    /// or a pattern, the folder its files go under.
    pub url: String,
    /// The absolute path the executors leave it at; may hold POSIX wildcards (`*`, `?`,
    /// `[...]`), each match then uploaded under `url`.
    pub path: String,
    /// With wildcards in `path`: what is cut from each match's path before it is appended
    /// to `url`; when absent, or when `path` does not start with it, `path`'s folders
    /// before its first wildcard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    #[serde(default, rename = "type", skip_serializing_if = "FileType::is_file")]
    pub kind: FileType,
}

impl Output {
    /// Whether `path` selects files by a pattern.
    pub fn is_pattern(&self) -> bool {
        self.path.contains(['*', '?', '['])
    }

    /// What is cut from each match's path before it is appended to `url`: `path_prefix`
    /// when `path` starts with it, else the folders of `path` before its first wildcard.
    pub fn prefix(&self) -> &str {
        match &self.path_prefix {
            Some(p) if self.path.starts_with(p.as_str()) => p.trim_end_matches('/'),
            _ => {
                let wild = self.path.find(['*', '?', '[']).unwrap_or(self.path.len());
                self.path[..wild].rsplit_once('/').map_or("", |(dir, _)| dir)
            }
        }
    }
}

/// URL schemes the filer reads inputs from.
pub const INPUT_SCHEMES: [&str; 9] = [
    "s3", "gs", "az", "azure", "abfs", "abfss", "http", "https", "file",
];
/// URL schemes the filer writes outputs to.
pub const OUTPUT_SCHEMES: [&str; 7] = ["s3", "gs", "az", "azure", "abfs", "abfss", "file"];

/// The scheme of `url` (lowercased), if it has one of `schemes`.
pub fn scheme_of(url: &str, schemes: &[&str]) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    (schemes.contains(&scheme.as_str()) && !rest.is_empty()).then_some(scheme)
}

/// Why `path` is not an absolute, normal path, if it is not.
fn path_problem(path: &str) -> Option<String> {
    if !patterns::ABSOLUTE_PATH.is_match(path) {
        return Some(format!(
            "{path:?} is not an absolute path without . or .. segments"
        ));
    }
    if path.chars().count() > limits::PATH {
        return Some(format!(
            "must have at most {} characters and no NUL",
            limits::PATH
        ));
    }
    None
}

/// Why an input's or output's path is not one: absolute, in a folder (its folder is
/// shared between the steps, and `/` cannot be).
fn file_path_problem(path: &str) -> Option<String> {
    if !patterns::FILE_PATH.is_match(path) {
        return Some(format!(
            "{path:?} is not an absolute path in a folder (/data/x), without . or .. segments"
        ));
    }
    (path.chars().count() > limits::PATH)
        .then(|| format!("must have at most {} characters", limits::PATH))
}

/// The parent folder of an absolute path (`/data` for `/data/x`).
fn parent(path: &str) -> &str {
    match path.trim_end_matches('/').rsplit_once('/') {
        Some(("", _)) | None => "/",
        Some((dir, _)) => dir,
    }
}

impl StepsSpec {
    /// Every problem of the steps, each naming its field under `steps.`.
    pub fn problems(&self) -> Vec<FieldError> {
        let mut errors = vec![];
        let mut check = |ok: bool, field: String, message: String| {
            if !ok {
                errors.push(FieldError::new(field, message));
            }
        };
        check(
            (1..=limits::EXECUTORS).contains(&self.executors.len()),
            "steps.executors".into(),
            format!("must have 1 to {} executors", limits::EXECUTORS),
        );
        for (i, e) in self.executors.iter().enumerate() {
            let at = |f: &str| format!("steps.executors[{i}].{f}");
            check(
                patterns::NOT_BLANK.is_match(&e.image) && e.image.chars().count() <= limits::IMAGE,
                at("image"),
                format!("must not be empty, and at most {} characters", limits::IMAGE),
            );
            check(
                !e.command.is_empty() && e.command.len() <= limits::ARGS,
                at("command"),
                format!("must have 1 to {} items", limits::ARGS),
            );
            for (j, arg) in e.command.iter().enumerate() {
                check(
                    patterns::NO_NUL.is_match(arg) && arg.chars().count() <= limits::ARG,
                    at(&format!("command[{j}]")),
                    format!("must have at most {} characters and no NUL", limits::ARG),
                );
            }
            for (name, path) in [
                ("workdir", &e.workdir),
                ("stdin", &e.stdin),
                ("stdout", &e.stdout),
                ("stderr", &e.stderr),
            ] {
                if let Some(why) = path.as_deref().and_then(path_problem) {
                    check(false, at(name), why);
                }
            }
            check(
                e.env.len() <= limits::ENV,
                at("env"),
                format!("more than {} variables", limits::ENV),
            );
            for (key, value) in &e.env {
                check(
                    patterns::ENV_NAME.is_match(key),
                    at(&format!("env.{key}")),
                    "is not a valid environment variable name".into(),
                );
                check(
                    patterns::NO_NUL.is_match(value) && value.chars().count() <= limits::ENV_VALUE,
                    at(&format!("env.{key}")),
                    format!("must have at most {} characters and no NUL", limits::ENV_VALUE),
                );
            }
        }
        check(
            self.inputs.len() <= limits::FILES && self.outputs.len() <= limits::FILES,
            "steps".into(),
            format!("more than {} inputs or outputs", limits::FILES),
        );
        for (i, input) in self.inputs.iter().enumerate() {
            let at = |f: &str| format!("steps.inputs[{i}].{f}");
            let path = file_path_problem(&input.path);
            if let Some(why) = path {
                check(false, at("path"), why);
            }
            match (&input.content, &input.url) {
                (Some(content), _) => {
                    check(
                        patterns::NO_NUL.is_match(content),
                        at("content"),
                        "must not contain a NUL character".into(),
                    );
                }
                (None, Some(url)) => check(
                    scheme_of(url, &INPUT_SCHEMES).is_some() && url_is_normal(url),
                    at("url"),
                    format!(
                        "{url:?} is not a URL the filer reads (schemes: {}; no . or .. segments)",
                        INPUT_SCHEMES.join(", ")
                    ),
                ),
                (None, None) => check(false, at("url"), "give a url or content".into()),
            }
        }
        for (i, output) in self.outputs.iter().enumerate() {
            let at = |f: &str| format!("steps.outputs[{i}].{f}");
            let path = file_path_problem(&output.path);
            if let Some(why) = path {
                check(false, at("path"), why);
            }
            check(
                scheme_of(&output.url, &OUTPUT_SCHEMES).is_some() && url_is_normal(&output.url),
                at("url"),
                format!(
                    "{:?} is not a URL the filer writes (schemes: {}; no . or .. segments)",
                    output.url,
                    OUTPUT_SCHEMES.join(", ")
                ),
            );
            if let Some(why) = output.path_prefix.as_deref().and_then(path_problem) {
                check(false, at("path_prefix"), why);
            }
        }
        check(
            self.volumes.len() <= limits::VOLUMES,
            "steps.volumes".into(),
            format!("more than {} volumes", limits::VOLUMES),
        );
        for (i, volume) in self.volumes.iter().enumerate() {
            let why = path_problem(volume).or_else(|| {
                (volume.trim_end_matches('/').is_empty()).then(|| "must not be /".into())
            });
            if let Some(why) = why {
                check(false, format!("steps.volumes[{i}]"), why);
            }
        }
        errors
    }

    /// The folders every step shares: the volumes, and the folders the inputs and outputs
    /// are in (a directory's own path; a pattern's prefix), without any that lies in another.
    pub fn shared_folders(&self) -> Vec<String> {
        let inputs = self.inputs.iter().map(|i| match i.kind {
            FileType::Directory if i.content.is_none() => i.path.trim_end_matches('/'),
            _ => parent(&i.path),
        });
        let outputs = self.outputs.iter().map(|o| match o.kind {
            _ if o.is_pattern() => o.prefix(),
            FileType::File => parent(&o.path),
            FileType::Directory => o.path.trim_end_matches('/'),
        });
        let mut all: Vec<&str> = self
            .volumes
            .iter()
            .map(|v| v.trim_end_matches('/'))
            .chain(inputs)
            .chain(outputs)
            .filter(|f| !f.is_empty())
            .collect();
        all.sort_unstable();
        all.dedup();
        let mut kept: Vec<String> = vec![];
        for folder in all {
            let inside = kept
                .iter()
                .any(|k| folder.strip_prefix(k.as_str()).is_some_and(|r| r.starts_with('/')));
            if !inside {
                kept.push(folder.to_string());
            }
        }
        kept
    }

    /// The steps a provider runs: the filer's download (when there are inputs), the
    /// executors, the filer's upload (when there are outputs). `plan` is what each filer
    /// step is told (`staging::Plan`, as JSON); `env` is the job's own environment, which
    /// every executor gets under its own.
    pub fn plan(&self, env: &BTreeMap<String, String>, policy: &crate::staging::Policy) -> StepPlan {
        let filer_plan = crate::staging::Plan::of(self, policy).to_json();
        // The tenant's file:// folders, which a filer on the gateway's host may reach.
        let folders = |list: &[String]| -> Vec<String> {
            list.iter()
                .filter_map(|p| reqwest::Url::parse(p).ok())
                .filter(|u| u.scheme() == "file")
                .map(|u| u.path().to_string())
                .collect()
        };
        let filer = |role: StepRole, verb: &str| Step {
            role,
            image: String::new(),
            command: vec!["filer".into(), verb.into()],
            workdir: None,
            env: BTreeMap::from([(FILER_PLAN_ENV.to_string(), filer_plan.to_string())]),
            stdin: None,
            stdout: None,
            stderr: None,
            ignore_error: false,
            host_reads: folders(&policy.read),
            host_writes: folders(&policy.write),
        };
        let executors = self.executors.iter().map(|e| Step {
            role: StepRole::Executor,
            image: e.image.clone(),
            command: e.command.clone(),
            workdir: e.workdir.clone(),
            env: env.iter().chain(&e.env).map(|(k, v)| (k.clone(), v.clone())).collect(),
            stdin: e.stdin.clone(),
            stdout: e.stdout.clone(),
            stderr: e.stderr.clone(),
            ignore_error: e.ignore_error,
            host_reads: vec![],
            host_writes: vec![],
        });
        let steps = (!self.inputs.is_empty())
            .then(|| filer(StepRole::StageIn, "stage-in"))
            .into_iter()
            .chain(executors)
            .chain((!self.outputs.is_empty()).then(|| filer(StepRole::StageOut, "stage-out")))
            .collect();
        StepPlan {
            steps,
            volumes: self.shared_folders(),
        }
    }
}

/// The variable that carries a filer step's plan.
pub const FILER_PLAN_ENV: &str = "OFFLOAD_FILER_PLAN";

/// Whether the URL's path has no `.` or `..` segment (which a filesystem would follow out
/// of an allowed folder).
fn url_is_normal(url: &str) -> bool {
    let path = url.split_once("://").map_or(url, |(_, rest)| rest);
    let path = path.split(['?', '#']).next().unwrap_or_default();
    !path.split('/').any(|s| s == "." || s == "..") && patterns::NO_NUL.is_match(url)
}

/// One step of an attempt that ran, as `Job.steps` keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StepLog {
    /// `stage_in` and `stage_out` are the gateway's filer; `executor` the job's own.
    #[schema(value_type = String, example = "executor")]
    pub role: StepRole,
    /// Absent when the step never ran (an earlier one failed) or was stopped.
    pub exit_code: Option<i32>,
    pub started_at: Option<chrono::DateTime<chrono::Utc>>,
    pub finished_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The end of its output, stdout and stderr interleaved.
    pub log: String,
}

impl From<offload_provider::StepRun> for StepLog {
    fn from(run: offload_provider::StepRun) -> StepLog {
        StepLog {
            role: run.role,
            exit_code: run.exit_code,
            started_at: run.started.map(Into::into),
            finished_at: run.finished.map(Into::into),
            log: run.log,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn steps(json: serde_json::Value) -> StepsSpec {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn malformed_steps_name_their_fields() {
        let s = steps(serde_json::json!({
            "executors": [{"image": "alpine", "command": [], "workdir": "data"}],
            "inputs": [
                {"url": "ftp://x/y", "path": "/data/in"},
                {"path": "/data/b"},
                {"url": "s3://b/../k", "path": "/x"},
            ],
            "outputs": [{"url": "https://x/y", "path": "/out/*.txt", "path_prefix": "out"}],
            "volumes": ["rel", "/"],
        }));
        let fields: Vec<_> = s.problems().into_iter().map(|e| e.field).collect();
        assert_eq!(
            fields,
            [
                "steps.executors[0].command",
                "steps.executors[0].workdir",
                "steps.inputs[0].url",
                "steps.inputs[1].url",
                "steps.inputs[2].path",
                "steps.inputs[2].url",
                "steps.outputs[0].url",
                "steps.outputs[0].path_prefix",
                "steps.volumes[0]",
                "steps.volumes[1]",
            ]
        );
        let none = steps(serde_json::json!({"executors": []}));
        assert_eq!(none.problems()[0].field, "steps.executors");
    }

    #[test]
    fn the_shared_folders_hold_every_file_once() {
        let s = steps(serde_json::json!({
            "executors": [{"image": "a", "command": ["true"]}],
            "inputs": [
                {"url": "s3://b/k", "path": "/data/in/a.txt"},
                {"content": "x", "path": "/tmp/run.sh"},
                {"url": "s3://b/d", "path": "/ref/d/", "type": "DIRECTORY"},
            ],
            "outputs": [
                {"url": "s3://b/o", "path": "/data/out.txt"},
                {"url": "s3://b/m", "path": "/work/out/*.csv", "path_prefix": "/work/out"},
            ],
            "volumes": ["/data/", "/vol/A"],
        }));
        assert!(s.problems().is_empty(), "{:?}", s.problems());
        assert_eq!(s.shared_folders(), ["/data", "/ref/d", "/tmp", "/vol/A", "/work/out"]);
        let plan = s.plan(&BTreeMap::new(), &Default::default());
        let roles: Vec<_> = plan.steps.iter().map(|s| s.role).collect();
        assert_eq!(roles, [StepRole::StageIn, StepRole::Executor, StepRole::StageOut]);
    }
}
