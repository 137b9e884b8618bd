//! Users give an image, ECS wants a task definition. offload registers one per distinct
//! (image, size, architecture, log settings, roles, and for a job of several steps the
//! shape of its steps) under a family name derived from those, so any gateway finds the
//! same one again: it looks the family up (and checks its tag) before it registers, and
//! remembers the answer.

use aws_sdk_ecs::types::builders::ContainerDefinitionBuilder;
use aws_sdk_ecs::types::{
    Compatibility, ContainerDefinition, CpuArchitecture, LogConfiguration, LogDriver, NetworkMode,
    OsFamily, RuntimePlatform, Tag, Volume,
};
use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::sizing::Size;

/// The one container of the task definitions offload registers.
pub const CONTAINER: &str = "main";
/// Tag on registered definitions: the digest their family name was made from.
pub const DIGEST_TAG: &str = "offload:definition";

/// The family name and the digest for an image at a size under this provider's settings;
/// `shape` is what else the definition is made from (a job of steps' [`crate::steps::shape`],
/// none for one container).
pub fn family(config: &Config, image: &str, size: Size, shape: &[String]) -> (String, String) {
    let base = [
        image,
        &size.cpu_units.to_string(),
        &size.memory_mib.to_string(),
        config.cpu_architecture.as_str(),
        config.log_group.as_deref().unwrap_or(""),
        &config.log_stream_prefix,
        &config.region,
        config.execution_role_arn.as_deref().unwrap_or(""),
        config.task_role_arn.as_deref().unwrap_or(""),
    ];
    let parts: Vec<&str> = base.into_iter().chain(shape.iter().map(String::as_str)).collect();
    let digest = Sha256::digest(parts.join("\n"));
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    (format!("offload-{hex}"), hex)
}

/// A container of `image` named `name`, logging where the provider's settings say.
pub fn container(config: &Config, name: &str, image: &str) -> ContainerDefinitionBuilder {
    let container = ContainerDefinition::builder().name(name).image(image);
    match &config.log_group {
        Some(group) => container.log_configuration(
            LogConfiguration::builder()
                .log_driver(LogDriver::Awslogs)
                .options("awslogs-group", group)
                .options("awslogs-region", &config.region)
                .options("awslogs-stream-prefix", &config.log_stream_prefix)
                .build()
                .expect("a log configuration has its driver"),
        ),
        None => container,
    }
}

/// The one container of a job's own task definition: the whole task's memory.
pub fn one_container(config: &Config, image: &str, size: Size) -> ContainerDefinition {
    container(config, CONTAINER, image)
        .essential(true)
        .memory(size.memory_mib as i32)
        .build()
}

/// The RegisterTaskDefinition request for `family`.
pub fn register(
    ecs: &aws_sdk_ecs::Client,
    config: &Config,
    size: Size,
    (family, digest): (&str, &str),
    (volumes, containers): (Vec<Volume>, Vec<ContainerDefinition>),
    tags: Vec<Tag>,
) -> aws_sdk_ecs::operation::register_task_definition::builders::RegisterTaskDefinitionFluentBuilder
{
    let digest_tag = Tag::builder().key(DIGEST_TAG).value(digest).build();
    ecs.register_task_definition()
        .family(family)
        .requires_compatibilities(Compatibility::Fargate)
        .network_mode(NetworkMode::Awsvpc)
        .cpu(size.cpu_units.to_string())
        .memory(size.memory_mib.to_string())
        .runtime_platform(
            RuntimePlatform::builder()
                .cpu_architecture(CpuArchitecture::from(config.cpu_architecture.as_str()))
                .operating_system_family(OsFamily::Linux)
                .build(),
        )
        .set_execution_role_arn(config.execution_role_arn.clone())
        .set_task_role_arn(config.task_role_arn.clone())
        .set_volumes((!volumes.is_empty()).then_some(volumes))
        .set_container_definitions(Some(containers))
        .set_tags(Some([tags, vec![digest_tag]].concat()))
}
