//! `secret_env` kept in Secret Manager, so that no secret value is ever in a job resource
//! (which anyone who may read the job can read). Each variable of an attempt is a secret
//! of its own, named from the job (`JOB-env-0`, `JOB-env-1`, ...) and labelled with the
//! launch key; the job's container references the version added for this launch.
//! `release` deletes them with the job. The job's service account needs
//! `roles/secretmanager.secretAccessor` on them (Cloud Run checks it when the job is
//! created).

use google_cloud_gax::error::rpc::Code;
use google_cloud_secretmanager_v1::client::SecretManagerService;
use google_cloud_secretmanager_v1::model::{
    replication::Automatic, Replication, Secret, SecretPayload,
};
use offload_provider::{Launch, Result};

use crate::api::{self, classify, code};
use crate::job;

fn secret_id(job: &str, i: usize) -> String {
    format!("{job}-env-{i}")
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

/// Deletes the job's secrets: `JOB-env-0` on until one is not there.
pub async fn delete(client: &SecretManagerService, project: &str, job: &str) -> Result<()> {
    for i in 0.. {
        let deleted = api::patiently(|| {
            client
                .delete_secret()
                .set_name(format!("projects/{project}/secrets/{}", secret_id(job, i)))
                .send()
        })
        .await;
        match deleted {
            Ok(()) => {}
            Err(e) if code(&e) == Some(Code::NotFound) => return Ok(()),
            Err(e) => return Err(classify("delete secret", e)),
        }
    }
    Ok(())
}
