//! `secret_env` kept in Secret Manager, so that no secret value is ever in a job resource
//! (which anyone who may read the job can read). Each variable of an attempt is a secret
//! of its own, named from the job (`JOB-env-0`, `JOB-env-1`, ...) and labelled
//! `managed-by=offload` and with the launch key; the job's container references the
//! version added for this launch. The job's service account needs
//! `roles/secretmanager.secretAccessor` on them (Cloud Run checks it when the job is
//! created).
//!
//! None may outlive its job. A job's secrets are found by listing them (a name filter),
//! not by counting up until one is missing, and each is deleted on its own, one already
//! gone being no error: a release that failed half-way deletes the rest when it is tried
//! again. A launch that fails after making some deletes them when nothing can use them
//! (`lib.rs`), and [`orphans`] lists every secret offload made, by launch key, for the
//! engine's orphan sweep, which releases those no live job owns.

use google_cloud_gax::error::rpc::Code;
use google_cloud_secretmanager_v1::client::SecretManagerService;
use google_cloud_secretmanager_v1::model::{
    replication::Automatic, Replication, Secret, SecretPayload,
};
use offload_provider::{Launch, Result};

use crate::api::{self, classify, code};
use crate::job;

/// Secrets per page of a list.
const PAGE: i32 = 1_000;

/// What every one of `job`'s secrets' ids starts with.
fn prefix(job: &str) -> String {
    format!("{job}-env-")
}

fn secret_id(job: &str, i: usize) -> String {
    format!("{}{i}", prefix(job))
}

/// The id of a secret from its name (`projects/P/secrets/ID`).
fn id_of(name: &str) -> &str {
    name.rsplit('/').next().unwrap_or(name)
}

/// The project's secrets whose names contain `text` that offload made.
async fn list(client: &SecretManagerService, project: &str, text: &str) -> Result<Vec<Secret>> {
    let mut found = vec![];
    let mut token = String::new();
    loop {
        let page = api::patiently(|| {
            client
                .list_secrets()
                .set_parent(format!("projects/{project}"))
                .set_filter(format!("name:\"{text}\""))
                .set_page_size(PAGE)
                .set_page_token(token.clone())
                .send()
        })
        .await
        .map_err(|e| classify("list secrets", e))?;
        found.extend(page.secrets.into_iter().filter(|s| {
            s.labels.get(job::MANAGED_BY_LABEL).map(String::as_str) == Some("offload")
        }));
        if page.next_page_token.is_empty() {
            return Ok(found);
        }
        token = page.next_page_token;
    }
}

/// The launch keys of every secret offload made in `project`, each once.
pub async fn orphans(client: &SecretManagerService, project: &str) -> Result<Vec<String>> {
    let mut keys: Vec<String> = list(client, project, "offload-")
        .await?
        .into_iter()
        .filter_map(|s| s.labels.get(job::KEY_LABEL).cloned())
        .collect();
    keys.sort();
    keys.dedup();
    Ok(keys)
}

/// Stores each `secret_env` value as a new version of its secret: (variable, secret,
/// version) for the job's references.
pub async fn put(
    client: &SecretManagerService,
    project: &str,
    job: &str,
    launch: &Launch,
) -> Result<Vec<(String, String, String)>> {
    let mut refs = vec![];
    for (i, (var, value)) in launch.secret_env.iter().enumerate() {
        let id = secret_id(job, i);
        let created = api::patiently(|| {
            client
                .create_secret()
                .set_parent(format!("projects/{project}"))
                .set_secret_id(&id)
                .set_secret(
                    Secret::new()
                        .set_replication(Replication::new().set_automatic(Automatic::new()))
                        .set_labels([
                            (job::MANAGED_BY_LABEL, "offload"),
                            (job::KEY_LABEL, launch.key.as_str()),
                        ]),
                )
                .send()
        })
        .await;
        match created {
            Ok(_) => {}
            // A launch after a crash finds the secret its first try made.
            Err(e) if code(&e) == Some(Code::AlreadyExists) => {}
            Err(e) => return Err(classify("create secret", e)),
        }
        let version = api::patiently(|| {
            client
                .add_secret_version()
                .set_parent(format!("projects/{project}/secrets/{id}"))
                .set_payload(SecretPayload::new().set_data(value.clone().into_bytes()))
                .send()
        })
        .await
        .map_err(|e| classify("add secret version", e))?;
        let number = version
            .name
            .rsplit('/')
            .next()
            .unwrap_or("latest")
            .to_string();
        refs.push((var.clone(), id, number));
    }
    Ok(refs)
}

/// Deletes the job's secrets, each of them, one already gone being no error.
pub async fn delete(client: &SecretManagerService, project: &str, job: &str) -> Result<()> {
    let prefix = prefix(job);
    for secret in list(client, project, &prefix).await? {
        if !id_of(&secret.name).starts_with(&prefix) {
            continue;
        }
        let deleted = api::patiently(|| client.delete_secret().set_name(&secret.name).send()).await;
        match deleted {
            Ok(()) => {}
            Err(e) if code(&e) == Some(Code::NotFound) => {}
            Err(e) => return Err(classify("delete secret", e)),
        }
    }
    Ok(())
}
