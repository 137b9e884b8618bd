//! Users give an image, ECS wants a task definition. offload registers one per distinct
//! (image, size, architecture, log settings, roles) under a family name derived from
//! those, so any gateway finds the same one again: it looks the family up (and checks
//! its tag) before it registers, and remembers the answer.

use aws_sdk_ecs::types::{
    Compatibility, ContainerDefinition, CpuArchitecture, LogConfiguration, LogDriver, NetworkMode,
    OsFamily, RuntimePlatform, Tag,
};
use offload_provider::{ProviderError, Result};
use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::sizing::Size;

/// The one container of the task definitions offload registers.
pub const CONTAINER: &str = "main";
/// Tag on registered definitions: the digest their family name was made from.
pub const DIGEST_TAG: &str = "offload:definition";

/// The family name and the digest for an image at a size under this provider's settings.
pub fn family(config: &Config, image: &str, size: Size) -> (String, String) {
    let parts = [
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
    let digest = Sha256::digest(parts.join("\n"));
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    (format!("offload-{hex}"), hex)
}

fn build_error(e: impl std::fmt::Display) -> ProviderError {
    ProviderError::Config(format!("building an ECS request: {e}"))
}

/// The RegisterTaskDefinition request for `family`.
pub fn register(
    ecs: &aws_sdk_ecs::Client,
    config: &Config,
    image: &str,
    size: Size,
    family: &str,
    digest: &str,
    tags: Vec<Tag>,
) -> Result<
    aws_sdk_ecs::operation::register_task_definition::builders::RegisterTaskDefinitionFluentBuilder,
> {
    let mut container = ContainerDefinition::builder()
        .name(CONTAINER)
        .image(image)
        .essential(true)
        .memory(size.memory_mib as i32);
    if let Some(group) = &config.log_group {
        container = container.log_configuration(
            LogConfiguration::builder()
                .log_driver(LogDriver::Awslogs)
                .options("awslogs-group", group)
                .options("awslogs-region", &config.region)
                .options("awslogs-stream-prefix", &config.log_stream_prefix)
                .build()
                .map_err(build_error)?,
        );
    }
    let digest_tag = Tag::builder().key(DIGEST_TAG).value(digest).build();
    Ok(ecs
        .register_task_definition()
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
        .container_definitions(container.build())
        .set_tags(Some([tags, vec![digest_tag]].concat())))
}
