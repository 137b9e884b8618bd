//! The filer: `offload filer stage-in` puts a job's inputs in place before its executors,
//! `offload filer stage-out` uploads its outputs after them. A provider runs it as a step of
//! the workload, with the plan in `OFFLOAD_FILER_PLAN` and the deployment's credentials in
//! its environment (`AWS_*`, `GOOGLE_*`, `AZURE_*`, read by `object_store`'s builders), never
//! the job's. Paths are the job's container paths under `OFFLOAD_FILER_ROOT` (`/` in a
//! container; the launch's folder on the local provider).
//!
//! Every URL is checked against the plan's allow-list before anything is read or written.
//! Each uploaded file is printed as `offload-output: {"url", "path", "size_bytes"}` (the
//! task's output file log); a failure prints `offload-filer: URL: CAUSE` and exits 1, which
//! the gateway makes the job's reason (a SYSTEM_ERROR for TES).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::TryStreamExt;
use object_store::path::Path as StorePath;
use object_store::ObjectStore;
use serde::{Deserialize, Serialize};

use super::{allowed, net, Plan};
use crate::model::steps::{FileType, Input, Output, FILER_PLAN_ENV};

/// Where the filer finds the job's paths (`/` when unset).
pub const ROOT_ENV: &str = offload_provider::steps::FILER_ROOT_ENV;
/// The line that reports one uploaded file.
pub const OUTPUT_MARK: &str = "offload-output: ";
/// The line that reports the failure, which each provider reads back.
pub const FAILURE_MARK: &str = offload_provider::steps::FILER_MARK;

/// One uploaded file, as the output file log of a TES task has it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Uploaded {
    pub url: String,
    pub path: String,
    pub size_bytes: String,
}

/// A failure, naming the URL (or path) and the cause.
#[derive(Debug)]
pub struct Failure {
    pub url: String,
    pub cause: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.url, self.cause)
    }
}

/// A failure; its cause on one line (a store's answer may hold a whole XML document), so
/// that the line the filer prints says it all.
fn fail(url: &str, cause: impl std::fmt::Display) -> Failure {
    let cause = cause.to_string();
    Failure {
        url: url.to_string(),
        cause: cause.split_whitespace().collect::<Vec<_>>().join(" "),
    }
}

/// Runs `verb` (`stage-in` or `stage-out`) as the filer step does: the exit code.
pub async fn main(verb: &str) -> i32 {
    let plan: Plan = match std::env::var(FILER_PLAN_ENV)
        .map_err(|e| e.to_string())
        .and_then(|text| serde_json::from_str(&text).map_err(|e| e.to_string()))
    {
        Ok(plan) => plan,
        Err(e) => {
            println!("{FAILURE_MARK}(plan): {FILER_PLAN_ENV} holds no plan: {e}");
            return 2;
        }
    };
    let root = PathBuf::from(std::env::var(ROOT_ENV).unwrap_or_else(|_| "/".into()));
    let outcome = match verb {
        "stage-in" => stage_in(&plan, &root).await,
        "stage-out" => stage_out(&plan, &root).await.map(|uploaded| {
            for file in uploaded {
                println!("{OUTPUT_MARK}{}", serde_json::to_string(&file).unwrap_or_default());
            }
        }),
        other => Err(fail("(verb)", format!("{other:?} is neither stage-in nor stage-out"))),
    };
    match outcome {
        Ok(()) => 0,
        Err(e) => {
            println!("{FAILURE_MARK}{e}");
            1
        }
    }
}

/// `path` (absolute, in the job's view) under `root`.
fn local(root: &Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}

/// The store a URL lives in, and the object's path in it.
fn store_for(url: &str) -> Result<(Arc<dyn ObjectStore>, StorePath), Failure> {
    let parsed = reqwest::Url::parse(url).map_err(|e| fail(url, e))?;
    let key = || {
        StorePath::from_url_path(parsed.path()).map_err(|e| fail(url, format!("not an object path: {e}")))
    };
    let store: Arc<dyn ObjectStore> = match parsed.scheme() {
        "file" => {
            let path = parsed
                .to_file_path()
                .map_err(|()| fail(url, "not a local path"))?;
            let key = StorePath::from_absolute_path(&path).map_err(|e| fail(url, e))?;
            return Ok((Arc::new(object_store::local::LocalFileSystem::new()), key));
        }
        #[cfg(feature = "s3")]
        "s3" => Arc::new(
            object_store::aws::AmazonS3Builder::from_env()
                .with_url(url)
                .build()
                .map_err(|e| fail(url, e))?,
        ),
        #[cfg(feature = "gcs")]
        "gs" => Arc::new(
            object_store::gcp::GoogleCloudStorageBuilder::from_env()
                .with_url(url)
                .build()
                .map_err(|e| fail(url, e))?,
        ),
        #[cfg(feature = "azure-blob")]
        "az" | "azure" | "abfs" | "abfss" => Arc::new(
            object_store::azure::MicrosoftAzureBuilder::from_env()
                .with_url(url)
                .build()
                .map_err(|e| fail(url, e))?,
        ),
        other => {
            return Err(fail(
                url,
                format!("this offload was built without the object store for {other}://"),
            ))
        }
    };
    Ok((store, key()?))
}

async fn stage_in(plan: &Plan, root: &Path) -> Result<(), Failure> {
    for input in &plan.inputs {
        let target = local(root, &input.path);
        // Content is a file's, whatever `type` says.
        if let Some(content) = &input.content {
            write_file(&target, content.as_bytes(), &input.path)?;
            continue;
        }
        let url = input.url.as_deref().unwrap_or_default();
        if !allowed(&plan.policy.read, url) {
            return Err(fail(url, "not under a prefix this tenant may read"));
        }
        download(plan, input, url, &target).await?;
    }
    Ok(())
}

fn write_file(target: &Path, bytes: &[u8], shown: &str) -> Result<(), Failure> {
    if let Some(dir) = target.parent() {
        std::fs::create_dir_all(dir).map_err(|e| fail(shown, format!("creating its folder: {e}")))?;
    }
    std::fs::write(target, bytes).map_err(|e| fail(shown, format!("writing: {e}")))
}

async fn download(plan: &Plan, input: &Input, url: &str, target: &Path) -> Result<(), Failure> {
    let lower = url.to_ascii_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https://") {
        if input.kind == FileType::Directory {
            return Err(fail(url, "an http(s) input is one FILE, not a DIRECTORY"));
        }
        return http_get(url, plan.policy.private_addresses, target, &input.path).await;
    }
    let (store, key) = store_for(url)?;
    match input.kind {
        FileType::File => {
            let bytes = store
                .get(&key)
                .await
                .map_err(|e| fail(url, e))?
                .bytes()
                .await
                .map_err(|e| fail(url, e))?;
            write_file(target, &bytes, &input.path)
        }
        FileType::Directory => {
            std::fs::create_dir_all(target).map_err(|e| fail(&input.path, e))?;
            let objects: Vec<_> = store
                .list(Some(&key))
                .try_collect()
                .await
                .map_err(|e| fail(url, e))?;
            for object in objects {
                let Some(rest) = object.location.prefix_match(&key) else {
                    continue;
                };
                let relative: Vec<String> = rest.map(|p| p.as_ref().to_string()).collect();
                let bytes = store
                    .get(&object.location)
                    .await
                    .map_err(|e| fail(url, format!("{}: {e}", object.location)))?
                    .bytes()
                    .await
                    .map_err(|e| fail(url, e))?;
                write_file(&target.join(relative.join("/")), &bytes, &input.path)?;
            }
            Ok(())
        }
    }
}

async fn http_get(url: &str, private: bool, target: &Path, shown: &str) -> Result<(), Failure> {
    net::literal_host_allowed(url, private).map_err(|e| fail(url, e))?;
    let mut client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(3600))
        .redirect(reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() >= 10 {
                return attempt.error("more than 10 redirects");
            }
            match net::literal_host_allowed(attempt.url().as_str(), private) {
                Ok(()) => attempt.follow(),
                Err(why) => attempt.error(why),
            }
        }));
    if !private {
        client = client.dns_resolver(Arc::new(net::Guarded));
    }
    let client = client.build().map_err(|e| fail(url, e))?;
    let response = client.get(url).send().await.map_err(|e| {
        // The resolver's refusal is the cause worth naming.
        let mut cause = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            cause = format!("{cause}: {s}");
            source = s.source();
        }
        fail(url, cause)
    })?;
    let status = response.status();
    if !status.is_success() {
        return Err(fail(url, format!("HTTP {status}")));
    }
    if let Some(dir) = target.parent() {
        std::fs::create_dir_all(dir).map_err(|e| fail(shown, e))?;
    }
    let mut file = tokio::fs::File::create(target)
        .await
        .map_err(|e| fail(shown, format!("writing: {e}")))?;
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.try_next().await.map_err(|e| fail(url, e))? {
        tokio::io::AsyncWriteExt::write_all(&mut file, &chunk)
            .await
            .map_err(|e| fail(shown, format!("writing: {e}")))?;
    }
    // tokio's file writes in the background: what was written is on disk only once flushed.
    tokio::io::AsyncWriteExt::flush(&mut file)
        .await
        .map_err(|e| fail(shown, format!("writing: {e}")))
}

/// The regular files under `dir`, recursively, in name order; symbolic links are not
/// followed (a job cannot point the filer at what lies outside its folders).
fn files_under(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut found = vec![];
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let kind = entry.file_type()?;
        if kind.is_dir() {
            found.extend(files_under(&entry.path())?);
        } else if kind.is_file() {
            found.push(entry.path());
        }
    }
    Ok(found)
}

/// What one output names: (the file on disk, its path in the job's view, the URL it goes to).
fn matches(root: &Path, output: &Output) -> Result<Vec<(PathBuf, String, String)>, Failure> {
    let base = output.url.trim_end_matches('/');
    let shown = |file: &Path| format!("/{}", file.strip_prefix(root).unwrap_or(file).display());
    let under = |dir: &Path, file: &Path| {
        let rel = file.strip_prefix(dir).unwrap_or(file).to_string_lossy().into_owned();
        format!("{base}/{rel}")
    };
    if output.is_pattern() {
        let prefix = local(root, output.prefix());
        let pattern = local(root, &output.path);
        let mut found = vec![];
        let paths = glob::glob(&pattern.to_string_lossy())
            .map_err(|e| fail(&output.path, format!("not a pattern: {e}")))?;
        for path in paths.flatten() {
            let meta = std::fs::symlink_metadata(&path).map_err(|e| fail(&output.path, e))?;
            let files = if meta.is_dir() {
                files_under(&path).map_err(|e| fail(&output.path, e))?
            } else if meta.is_file() {
                vec![path]
            } else {
                continue;
            };
            found.extend(files.into_iter().map(|f| (f.clone(), shown(&f), under(&prefix, &f))));
        }
        return Ok(found);
    }
    let path = local(root, &output.path);
    let meta = std::fs::symlink_metadata(&path)
        .map_err(|e| fail(&output.path, format!("no such output: {e}")))?;
    match output.kind {
        FileType::File if meta.is_file() => Ok(vec![(path, output.path.clone(), output.url.clone())]),
        FileType::File => Err(fail(&output.path, "is not a regular file")),
        FileType::Directory if meta.is_dir() => Ok(files_under(&path)
            .map_err(|e| fail(&output.path, e))?
            .into_iter()
            .map(|f| (f.clone(), shown(&f), under(&path, &f)))
            .collect()),
        FileType::Directory => Err(fail(&output.path, "is not a directory")),
    }
}

async fn stage_out(plan: &Plan, root: &Path) -> Result<Vec<Uploaded>, Failure> {
    let mut uploaded = vec![];
    for output in &plan.outputs {
        if !allowed(&plan.policy.write, &output.url) {
            return Err(fail(&output.url, "not under a prefix this tenant may write"));
        }
        for (file, path, url) in matches(root, output)? {
            let bytes = std::fs::read(&file).map_err(|e| fail(&path, format!("reading: {e}")))?;
            let size = bytes.len();
            let (store, key) = store_for(&url)?;
            store
                .put(&key, bytes.into())
                .await
                .map_err(|e| fail(&url, e))?;
            uploaded.push(Uploaded {
                url,
                path,
                size_bytes: size.to_string(),
            });
        }
    }
    Ok(uploaded)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::staging::Policy;

    fn plan(json: serde_json::Value, read: &[&str], write: &[&str]) -> Plan {
        let steps: crate::model::steps::StepsSpec = serde_json::from_value(json).unwrap();
        Plan::of(
            &steps,
            &Policy {
                read: read.iter().map(|s| s.to_string()).collect(),
                write: write.iter().map(|s| s.to_string()).collect(),
                private_addresses: false,
            },
        )
    }

    /// Inline content, a file:// file and a file:// directory come in; a file, a directory
    /// and a pattern go out, with the URLs the spec's path_prefix rules give; nothing
    /// outside the allow-lists is touched, and symbolic links are not followed.
    #[tokio::test]
    async fn stages_local_files_in_and_out_within_the_allow_lists() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        std::fs::create_dir_all(src.join("ref/sub")).unwrap();
        std::fs::write(src.join("a.txt"), "alpha").unwrap();
        std::fs::write(src.join("ref/r1"), "r1").unwrap();
        std::fs::write(src.join("ref/sub/r2"), "r2").unwrap();
        let root = tmp.path().join("root");
        let dst = tmp.path().join("dst");
        let u = |p: &Path| format!("file://{}", p.display());
        let p = plan(
            serde_json::json!({
                "executors": [{"image": "a", "command": ["true"]}],
                "inputs": [
                    {"content": "inline", "path": "/tmp/run.sh"},
                    {"url": u(&src.join("a.txt")), "path": "/data/a.txt"},
                    {"url": u(&src.join("ref")), "path": "/ref", "type": "DIRECTORY"},
                ],
                "outputs": [
                    {"url": u(&dst.join("one.txt")), "path": "/data/a.txt"},
                    {"url": u(&dst.join("dir")), "path": "/ref", "type": "DIRECTORY"},
                    {"url": u(&dst.join("pat")), "path": "/ref/sub/r*", "path_prefix": "/ref"},
                ],
            }),
            &[&u(&src)],
            &[&u(&dst)],
        );
        stage_in(&p, &root).await.unwrap();
        assert_eq!(std::fs::read_to_string(root.join("tmp/run.sh")).unwrap(), "inline");
        assert_eq!(std::fs::read_to_string(root.join("data/a.txt")).unwrap(), "alpha");
        assert_eq!(std::fs::read_to_string(root.join("ref/sub/r2")).unwrap(), "r2");
        // A link the job left is not followed out of its folder.
        std::os::unix::fs::symlink("/etc/passwd", root.join("ref/sub/link")).unwrap();
        let uploaded = stage_out(&p, &root).await.unwrap();
        let urls: Vec<_> = uploaded.iter().map(|f| f.url.clone()).collect();
        assert_eq!(
            urls,
            [
                u(&dst.join("one.txt")),
                u(&dst.join("dir/r1")),
                u(&dst.join("dir/sub/r2")),
                u(&dst.join("pat/sub/r2")),
            ]
        );
        assert_eq!(uploaded[0].size_bytes, "5");
        assert_eq!(uploaded[3].path, "/ref/sub/r2");
        assert_eq!(std::fs::read_to_string(dst.join("pat/sub/r2")).unwrap(), "r2");
        assert!(!dst.join("dir/sub/link").exists());

        let outside = plan(
            serde_json::json!({
                "executors": [{"image": "a", "command": ["true"]}],
                "inputs": [{"url": u(&src.join("a.txt")), "path": "/data/a.txt"}],
            }),
            &[&u(&dst)],
            &[],
        );
        let err = stage_in(&outside, &root).await.unwrap_err();
        assert!(err.to_string().contains("may read"), "{err}");
    }

    #[tokio::test]
    async fn http_inputs_never_reach_loopback_unless_allowed() {
        let tmp = tempfile::tempdir().unwrap();
        let err = http_get("http://127.0.0.1:9/x", false, &tmp.path().join("x"), "/x")
            .await
            .unwrap_err();
        assert!(err.to_string().contains("loopback"), "{err}");
        let err = http_get("http://localhost:9/x", false, &tmp.path().join("x"), "/x")
            .await
            .unwrap_err();
        assert!(err.to_string().contains("localhost"), "{err}");
    }
}
