//! The `local` provider: runs a job's `command` + `args` as a process on the gateway's
//! host, so offload works on a laptop with no cloud account.
//!
//! The image is recorded but never pulled; the command runs with the host's tools.
//!
//! Each launch key owns a directory `<workdir>/<key>/` (mode 0700, as is the workdir) that
//! holds everything the provider knows, so a gateway that is killed and restarted
//! re-adopts its workloads from disk:
//!
//! - `launched`: created exclusively before the process starts; its presence makes a
//!   second launch of the same key adopt instead of starting again;
//! - `pid` and `exit_code`: written by the job's supervisor (`supervise`), which leads the
//!   job's process group and outlives a gateway crash;
//! - `output.log`: stdout and stderr, interleaved;
//! - `work/`: the job's fresh working directory (also its `HOME`, with `TMPDIR` in it).
//!
//! The job runs in a Landlock sandbox (`sandbox`) that leaves it only its `work/` and the
//! host's programs: the control files, the gateway's files and other jobs are out of its
//! reach. Before the process group is signalled (a cancel: SIGTERM, then SIGKILL after a
//! grace period; a release: SIGKILL for what is left), its leader is checked to be the
//! supervisor that wrote the pid file, so a pid number reused by another process is never
//! signalled.

mod sandbox;
mod steps;
mod supervise;

use std::fs::{self, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use offload_provider::figures::{Pricing, ReadPrices};
use offload_provider::{
    Capabilities, Handle, Launch, LogChunk, LogQuery, Observation, Phase, Provider,
    ProviderError, Result, RunTimes, StepRun, WorkloadSpec,
};
use sandbox::Sandbox;
use serde::Deserialize;

/// How a job's command is started: through `sh`, so that a command not found is the job's
/// exit code 127 and a message in its log, as in a shell.
const EXEC: &str = r#"exec "$@""#;

/// How long a launch may go without its supervisor writing a pid before it counts as lost.
const START_GRACE: Duration = Duration::from_secs(30);

/// The most log bytes one [`Provider::logs`] call returns.
const MAX_CHUNK: u64 = 1 << 20;

/// `[providers.NAME]` settings for `kind = "local"`.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "LocalConfig")]
pub struct Config {
    /// Where each launch gets its directory (made mode 0700); it must not lie under
    /// `read_paths`.
    #[serde(default = "default_workdir")]
    pub workdir: PathBuf,
    /// Seconds between SIGTERM and SIGKILL when a job is cancelled.
    #[serde(default = "default_grace")]
    pub grace_seconds: u64,
    /// The most vCPUs a job sent here may ask for; unset, the host's CPUs.
    pub max_cpu: Option<f64>,
    /// The most memory a job sent here may ask for, in bytes; unset, the host's memory.
    pub max_memory_bytes: Option<u64>,
    /// Jobs run as the gateway's own user, beside its store and its config: fine on a
    /// laptop, not for a gateway other machines can reach. The gateway refuses to start
    /// with this provider on a non-loopback address unless this is set.
    #[serde(default)]
    pub allow_non_loopback: bool,
    /// Several tenants' jobs on one host share its processes and files but for the
    /// sandbox: the gateway refuses this provider when more than one tenant is configured
    /// unless this is set, and then needs the full sandbox (Landlock ABI 6, Linux 6.12).
    #[serde(default)]
    pub allow_several_tenants: bool,
    /// What jobs may read and run of the host (besides their own `work/`); the workdir,
    /// the database and its key must not lie under any of them.
    #[serde(default = "sandbox::default_read_paths")]
    pub read_paths: Vec<PathBuf>,
    /// The program run as the filer step of a job with inputs or outputs (`PROGRAM filer
    /// stage-in`): default, the gateway's own executable.
    #[serde(default)]
    pub filer: Option<PathBuf>,
}

fn default_workdir() -> PathBuf {
    PathBuf::from("offload-data/local")
}

fn default_grace() -> u64 {
    10
}

impl Default for Config {
    fn default() -> Self {
        Config {
            workdir: default_workdir(),
            grace_seconds: default_grace(),
            max_cpu: None,
            max_memory_bytes: None,
            allow_non_loopback: false,
            allow_several_tenants: false,
            read_paths: sandbox::default_read_paths(),
            filer: None,
        }
    }
}

impl Config {
    /// Whether jobs could read `path` (it lies under a read path); relative paths count
    /// from the current directory, as the gateway opens them.
    pub fn exposes(&self, path: &Path) -> bool {
        let absolute = std::env::current_dir().map_or(path.to_path_buf(), |d| d.join(path));
        Sandbox::new(self.read_paths.clone()).exposes(&absolute)
    }

    pub fn build(&self) -> std::io::Result<LocalProvider> {
        let refuse = |why: String| std::io::Error::other(why);
        let sandbox = Sandbox::new(self.read_paths.clone());
        if self.allow_several_tenants && !sandbox.full() {
            return Err(refuse(format!(
                "allow_several_tenants needs the full sandbox, Landlock ABI {} (Linux 6.12), and this kernel has {}",
                sandbox::FULL_ABI,
                sandbox::kernel_abi()
            )));
        }
        if !sandbox.enforced() {
            tracing::warn!("the kernel has no Landlock: local jobs run unsandboxed, able to reach the gateway's files");
        }
        fs::create_dir_all(&self.workdir)?;
        fs::set_permissions(&self.workdir, fs::Permissions::from_mode(0o700))?;
        let root = fs::canonicalize(&self.workdir)?;
        if sandbox.exposes(&root) {
            return Err(refuse(format!(
                "the workdir {} lies under one of read_paths, where every job could read it",
                root.display()
            )));
        }
        let host_cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let filer = match &self.filer {
            Some(path) => Some(fs::canonicalize(path).map_err(|e| {
                refuse(format!("the filer {}: {e}", path.display()))
            })?),
            None => std::env::current_exe().ok(),
        };
        Ok(LocalProvider {
            root,
            sandbox,
            namespaces: namespaces_work(),
            filer,
            grace: Duration::from_secs(self.grace_seconds),
            capabilities: Capabilities {
                max_cpu: self.max_cpu.unwrap_or(host_cpus),
                max_memory_bytes: self.max_memory_bytes.unwrap_or_else(host_memory_bytes),
                gpu_kinds: vec![],
                spot: false,
                arch: vec![std::env::consts::ARCH.to_string()],
                max_observe_batch: 1000,
                max_tail_batch: 0,
            },
        })
    }
}

fn host_memory_bytes() -> u64 {
    let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(8 << 30, |kib| kib * 1024)
}

/// Whether this process may make the mount namespace a step of a workload of several
/// steps runs in (as root, or through an unprivileged user namespace): a child tries.
fn namespaces_work() -> bool {
    use std::os::unix::process::CommandExt;
    let user = unsafe { libc::getuid() } != 0;
    let mut probe = std::process::Command::new("/bin/true");
    // SAFETY: a system call only, between fork and exec.
    unsafe {
        probe.pre_exec(move || {
            let flags = libc::CLONE_NEWNS | if user { libc::CLONE_NEWUSER } else { 0 };
            match libc::unshare(flags) {
                0 => Ok(()),
                _ => Err(std::io::Error::last_os_error()),
            }
        });
    }
    probe.status().is_ok_and(|s| s.success())
}

/// Runs workloads as host processes; see the module docs.
pub struct LocalProvider {
    root: PathBuf,
    sandbox: Sandbox,
    /// Whether steps can have their mount namespace here.
    namespaces: bool,
    /// The filer's program.
    filer: Option<PathBuf>,
    grace: Duration,
    capabilities: Capabilities,
}

impl LocalProvider {
    /// A file error as a tenant may see it (a job's reason, a failed log read): the path
    /// is named from the workdir, whose place on the host is the operator's business and
    /// goes to the gateway's log only.
    fn io_err(&self, what: &str, path: &Path, e: std::io::Error) -> ProviderError {
        tracing::warn!(path = %path.display(), error = %e, "local provider: {what} failed");
        let shown = path.strip_prefix(&self.root).unwrap_or(Path::new("(workdir)"));
        ProviderError::Transient(format!("{what} {}: {e}", shown.display()))
    }

    fn dir(&self, key: &str) -> Result<PathBuf> {
        // Keys come from the engine, but a path must never escape the root.
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(ProviderError::NotFound(format!(
                "not a local launch key: {key:?}"
            )));
        }
        Ok(self.root.join(key))
    }

    /// When an ended workload ran: its wrapper writes `pid` as it starts and `exit_code`
    /// as it ends.
    fn ran(dir: &Path) -> Option<RunTimes> {
        let written = |name| fs::metadata(dir.join(name)).and_then(|m| m.modified()).ok();
        RunTimes::of(written("pid"), written("exit_code"))
    }

    fn read_pid(dir: &Path) -> Option<Pid> {
        let text = fs::read_to_string(dir.join(supervise::PID)).ok()?;
        text.trim()
            .parse::<i32>()
            .ok()
            .filter(|p| *p > 1)
            .map(Pid::from_raw)
    }

    fn read_exit(dir: &Path) -> Option<i32> {
        fs::read_to_string(dir.join(supervise::EXIT_CODE))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// The process group of the launch in `dir`, while its supervisor lives: the process
    /// the pid file names leads its own group and started between the launch and the pid
    /// file's writing, so the number is not another process's that came after it.
    fn group(dir: &Path) -> Option<Pid> {
        let pid = Self::read_pid(dir)?;
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let (state, pgrp, started) = supervise::proc_stat(&stat)?;
        if state == 'Z' || pgrp != pid.as_raw() {
            return None;
        }
        let started = boot_time()? + Duration::from_millis(started * 1000 / clock_ticks());
        let modified = |name: &str| fs::metadata(dir.join(name)).and_then(|m| m.modified()).ok();
        // The boot time is known to the second.
        let slack = Duration::from_secs(2);
        let ours = started + slack >= modified("launched")?
            && started <= modified(supervise::PID)? + slack;
        ours.then_some(pid)
    }

    /// Whether any process of the workload's group is still alive (zombies do not count).
    fn group_alive(pgid: Pid) -> bool {
        let Ok(entries) = fs::read_dir("/proc") else {
            return killpg(pgid, None).is_ok();
        };
        entries.flatten().any(|e| {
            let stat = fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            supervise::proc_stat(&stat)
                .is_some_and(|(state, pgrp, _)| state != 'Z' && pgrp == pgid.as_raw())
        })
    }

    fn phase(dir: &Path) -> Phase {
        if !dir.join("launched").exists() {
            return Phase::Lost {
                reason: "no such local workload".into(),
            };
        }
        if let Some(code) = Self::read_exit(dir) {
            return Self::ended(dir, code);
        }
        if Self::group(dir).is_some() {
            return Phase::Running;
        }
        // The supervisor may have written the code between the two reads.
        if let Some(code) = Self::read_exit(dir) {
            return Self::ended(dir, code);
        }
        if Self::read_pid(dir).is_some() {
            return Phase::Lost {
                reason: "the process died without reporting an exit code".into(),
            };
        }
        let age = fs::metadata(dir.join("launched"))
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .unwrap_or_default();
        if age > START_GRACE {
            Phase::Lost {
                reason: "the process never started".into(),
            }
        } else {
            Phase::Starting { reason: None }
        }
    }

    /// How a workload that exited with `code` ended: a failed filer step is not the job's
    /// own failure, and has no exit code of the job's.
    fn ended(dir: &Path, code: i32) -> Phase {
        match (code, steps::filer_failure(dir)) {
            (0, _) | (_, None) => exited(code),
            (_, Some(why)) => Phase::Exited {
                exit_code: None,
                reason: Some(why),
            },
        }
    }

    fn spawn(&self, dir: &Path, launch: &Launch) -> Result<()> {
        let work = dir.join("work");
        let tmp = work.join("tmp");
        fs::create_dir_all(&tmp).map_err(|e| self.io_err("creating", &tmp, e))?;
        let log_path = dir.join("output.log");
        let log = fs::File::create(&log_path).map_err(|e| self.io_err("creating", &log_path, e))?;
        let log2 = log
            .try_clone()
            .map_err(|e| self.io_err("opening", &log_path, e))?;
        let ruleset = self
            .sandbox
            .ruleset(&work, &[], &[])
            .map_err(ProviderError::Transient)?;
        let mut plan =
            supervise::Plan::new(dir, ruleset).map_err(|e| self.io_err("preparing", dir, e))?;
        if let Some(steps) = &launch.spec.steps {
            let prepared = steps::prepare(dir, launch, steps, &self.sandbox, self.filer.as_deref())
                .map_err(|e| self.io_err("preparing the steps in", dir, e))?;
            plan = plan.with_steps(prepared);
        }
        let spec = &launch.spec;
        let mut cmd = tokio::process::Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(EXEC)
            .arg("offload-job")
            .args(&spec.command)
            .args(&spec.args)
            .current_dir(&work)
            .env_clear()
            .env(
                "PATH",
                std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()),
            )
            .env("HOME", &work)
            .env("TMPDIR", &tmp)
            .env("OFFLOAD_JOB_ID", &launch.job_id)
            .envs(&spec.env)
            .envs(&launch.secret_env)
            .stdin(std::process::Stdio::null())
            .stdout(log)
            .stderr(log2)
            .process_group(0);
        // SAFETY: `in_child` makes system calls only, on what `Plan::new` prepared.
        unsafe {
            cmd.pre_exec(move || plan.in_child());
        }
        let mut supervisor = cmd
            .spawn()
            .map_err(|e| ProviderError::Transient(format!("starting the job: {e}")))?;
        // Reap the supervisor so that a finished one never lingers as a zombie.
        tokio::spawn(async move {
            let _ = supervisor.wait().await;
        });
        Ok(())
    }
}

impl LocalProvider {
    /// A workload of several steps' log: its steps' logs one after another, the cursor an
    /// offset into them all.
    fn joined_logs(&self, logs: &[PathBuf], query: &LogQuery) -> Result<LogChunk> {
        let sizes: Vec<u64> = logs
            .iter()
            .map(|p| fs::metadata(p).map_or(0, |m| m.len()))
            .collect();
        let len: u64 = sizes.iter().sum();
        let from = match (&query.cursor, query.tail_bytes) {
            (Some(c), _) => c
                .parse::<u64>()
                .map_err(|_| ProviderError::InvalidSpec(format!("bad log cursor {c:?}")))?,
            (None, Some(tail)) => len.saturating_sub(tail as u64),
            (None, None) => 0,
        };
        let to = len.min(from.saturating_add(MAX_CHUNK));
        let mut bytes = vec![];
        let mut start = 0u64;
        for (path, size) in logs.iter().zip(sizes) {
            let (lo, hi) = (from.max(start), to.min(start + size));
            if lo < hi {
                let mut file = fs::File::open(path).map_err(|e| self.io_err("opening", path, e))?;
                file.seek(SeekFrom::Start(lo - start))
                    .map_err(|e| self.io_err("reading", path, e))?;
                file.take(hi - lo)
                    .read_to_end(&mut bytes)
                    .map_err(|e| self.io_err("reading", path, e))?;
            }
            start += size;
        }
        Ok(LogChunk {
            text: String::from_utf8_lossy(&bytes).into_owned(),
            cursor: Some(to.max(from).to_string()),
        })
    }
}

/// When the host booted (`btime` of `/proc/stat`).
fn boot_time() -> Option<SystemTime> {
    let stat = fs::read_to_string("/proc/stat").ok()?;
    let secs: u64 = stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}

/// Clock ticks per second, the unit of a process's start time.
fn clock_ticks() -> u64 {
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as u64
    } else {
        100
    }
}

fn exited(code: i32) -> Phase {
    let reason = (code > 128 && code < 160).then(|| format!("killed by signal {}", code - 128));
    Phase::Exited {
        exit_code: Some(code),
        reason,
    }
}

#[async_trait::async_trait]
impl Provider for LocalProvider {
    fn kind(&self) -> &'static str {
        "local"
    }

    fn capabilities(&self) -> Capabilities {
        self.capabilities.clone()
    }

    fn price_sheet(&self, _read: &ReadPrices) -> Pricing {
        Pricing::default()
    }

    fn runs_steps(&self) -> bool {
        true
    }

    async fn step_runs(&self, handle: &Handle, tail_bytes: usize) -> Result<Vec<StepRun>> {
        Ok(steps::runs(&self.dir(&handle.key)?, tail_bytes))
    }

    fn validate(&self, spec: &WorkloadSpec) -> Result<()> {
        if let Some(plan) = &spec.steps {
            if let Some(why) =
                steps::refusal(plan, self.namespaces, self.filer.as_deref(), &self.sandbox)
            {
                return Err(ProviderError::InvalidSpec(why));
            }
        } else if spec.command.is_empty() {
            return Err(ProviderError::InvalidSpec(
                "the local provider runs `command` on the host and never pulls the image: give a command".into(),
            ));
        }
        if let Some(why) = self.capabilities.refusal(&spec.resources) {
            return Err(ProviderError::InvalidSpec(why));
        }
        match &spec.provider_options {
            None => Ok(()),
            Some(serde_json::Value::Object(options)) if options.is_empty() => Ok(()),
            Some(_) => Err(ProviderError::InvalidSpec(
                "provider_options.local: the local provider takes no options; leave it out".into(),
            )),
        }
    }

    fn options_schema(&self) -> serde_json::Value {
        serde_json::json!({"type": "object", "additionalProperties": false})
    }

    async fn launch(&self, launch: &Launch) -> Result<Handle> {
        self.validate(&launch.spec)?;
        let dir = self.dir(&launch.key)?;
        let handle = Handle {
            key: launch.key.clone(),
            provider_ref: launch.key.clone(),
        };
        fs::DirBuilder::new()
            .mode(0o700)
            .recursive(true)
            .create(&dir)
            .map_err(|e| self.io_err("creating", &dir, e))?;
        let marker = dir.join("launched");
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&marker)
        {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                tracing::info!(key = %launch.key, "adopting an existing local workload");
                return Ok(handle);
            }
            Err(e) => return Err(self.io_err("creating", &marker, e)),
        }
        if let Err(e) = self.spawn(&dir, launch) {
            // Nothing started: let a retry of the same key try again.
            let _ = fs::remove_file(&marker);
            return Err(e);
        }
        Ok(handle)
    }

    async fn observe(&self, handles: &[Handle]) -> Result<Vec<Observation>> {
        handles
            .iter()
            .map(|h| {
                let dir = self.dir(&h.key)?;
                let phase = Self::phase(&dir);
                let ran = phase.is_final().then(|| Self::ran(&dir)).flatten();
                Ok(Observation {
                    handle: h.clone(),
                    phase,
                    ran,
                })
            })
            .collect()
    }

    async fn cancel(&self, handle: &Handle, reason: &str) -> Result<()> {
        let dir = self.dir(&handle.key)?;
        // The supervisor lives as long as any of the job's processes: while it does, the
        // group is the job's, and once it has gone there is nothing left to stop.
        let Some(pgid) = Self::group(&dir) else {
            return Ok(());
        };
        tracing::info!(key = %handle.key, %reason, "stopping local workload");
        let _ = killpg(pgid, Signal::SIGTERM);
        let deadline = tokio::time::Instant::now() + self.grace;
        while tokio::time::Instant::now() < deadline {
            if !Self::group_alive(pgid) || Self::group(&dir).is_none() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if Self::group(&dir).is_some() {
            let _ = killpg(pgid, Signal::SIGKILL);
        }
        while Self::group_alive(pgid)
            && Self::group(&dir).is_some()
            && tokio::time::Instant::now() < deadline + Duration::from_secs(5)
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    async fn logs(&self, handle: &Handle, query: &LogQuery) -> Result<LogChunk> {
        let dir = self.dir(&handle.key)?;
        let step_logs = steps::logs(&dir);
        if !step_logs.is_empty() {
            return self.joined_logs(&step_logs, query);
        }
        let path = dir.join("output.log");
        let mut file = match fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(LogChunk::default()),
            Err(e) => return Err(self.io_err("opening", &path, e)),
        };
        let len = file
            .metadata()
            .map_err(|e| self.io_err("reading", &path, e))?
            .len();
        let from = match (&query.cursor, query.tail_bytes) {
            (Some(c), _) => c
                .parse::<u64>()
                .map_err(|_| ProviderError::InvalidSpec(format!("bad log cursor {c:?}")))?,
            (None, Some(tail)) => len.saturating_sub(tail as u64),
            (None, None) => 0,
        };
        let to = len.min(from.saturating_add(MAX_CHUNK));
        let mut bytes = Vec::with_capacity(to.saturating_sub(from) as usize);
        file.seek(SeekFrom::Start(from))
            .map_err(|e| self.io_err("reading", &path, e))?;
        file.take(to.saturating_sub(from))
            .read_to_end(&mut bytes)
            .map_err(|e| self.io_err("reading", &path, e))?;
        Ok(LogChunk {
            text: String::from_utf8_lossy(&bytes).into_owned(),
            cursor: Some(to.max(from).to_string()),
        })
    }

    async fn release(&self, handle: &Handle) -> Result<()> {
        let dir = self.dir(&handle.key)?;
        // Stragglers the command left in the background go with it.
        if let Some(pgid) = Self::group(&dir) {
            let _ = killpg(pgid, Signal::SIGKILL);
        }
        match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.io_err("removing", &dir, e)),
        }
    }

    async fn check(&self) -> Result<()> {
        let probe = self.root.join(".check");
        fs::write(&probe, b"ok").map_err(|e| {
            tracing::warn!(workdir = %self.root.display(), error = %e, "local provider: the workdir is not writable");
            ProviderError::Config(format!("the workdir is not writable: {e}"))
        })?;
        let _ = fs::remove_file(probe);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use offload_provider::Resources;
    use std::collections::BTreeMap;

    fn provider(dir: &Path, grace: u64) -> LocalProvider {
        Config {
            workdir: dir.to_path_buf(),
            grace_seconds: grace,
            ..Config::default()
        }
        .build()
        .unwrap()
    }

    fn launch(key: &str, script: &str) -> Launch {
        Launch {
            key: key.into(),
            job_id: "job".into(),
            attempt: 1,
            spec: WorkloadSpec {
                name: None,
                image: "busybox".into(),
                command: vec!["sh".into(), "-c".into(), script.into()],
                args: vec![],
                env: [("GREETING".to_string(), "hello".to_string())].into(),
                resources: Resources {
                    cpu: 0.5,
                    memory_bytes: 1 << 20,
                    gpu: None,
                    ephemeral_storage_bytes: None,
                },
                timeout_seconds: None,
                labels: BTreeMap::new(),
                provider_options: None,
                steps: None,
            },
            secret_env: [("TOKEN".to_string(), "s3cret".to_string())].into(),
            fresh: false,
        }
    }

    async fn wait_final(p: &LocalProvider, h: &Handle) -> Phase {
        for _ in 0..200 {
            let phase = p
                .observe(std::slice::from_ref(h))
                .await
                .unwrap()
                .remove(0)
                .phase;
            if phase.is_final() {
                return phase;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("workload {} did not finish", h.key);
    }

    #[tokio::test]
    async fn runs_with_env_and_captures_output_and_exit_code() {
        let tmp = tempfile::tempdir().unwrap();
        let p = provider(tmp.path(), 5);
        let h = p
            .launch(&launch(
                "k1",
                "echo $GREETING $TOKEN; pwd; echo oops >&2; exit 7",
            ))
            .await
            .unwrap();
        assert_eq!(
            wait_final(&p, &h).await,
            Phase::Exited {
                exit_code: Some(7),
                reason: None
            }
        );
        let log = p.logs(&h, &LogQuery::default()).await.unwrap();
        assert!(log.text.contains("hello s3cret"), "{}", log.text);
        assert!(log.text.contains("oops"), "{}", log.text);
        assert!(
            log.text.contains(&format!("{}/k1/work", p.root.display())),
            "{}",
            log.text
        );
        let tail = p
            .logs(
                &h,
                &LogQuery {
                    cursor: None,
                    tail_bytes: Some(5),
                },
            )
            .await
            .unwrap();
        assert_eq!(tail.text, "oops\n");
        let more = p
            .logs(
                &h,
                &LogQuery {
                    cursor: log.cursor.clone(),
                    tail_bytes: None,
                },
            )
            .await
            .unwrap();
        assert_eq!(more.text, "");
    }

    #[tokio::test]
    async fn relaunching_a_key_adopts_instead_of_starting_again() {
        let tmp = tempfile::tempdir().unwrap();
        let p = provider(tmp.path(), 5);
        let l = launch("k2", "echo started; sleep 0.5");
        let h1 = p.launch(&l).await.unwrap();
        let dir = p.root.join("k2");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while LocalProvider::read_pid(&dir).is_none() {
            assert!(tokio::time::Instant::now() < deadline, "no pid");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let first = LocalProvider::read_pid(&dir);
        // A fresh provider on the same directory stands for a restarted gateway.
        let p2 = provider(tmp.path(), 5);
        let h2 = p2.launch(&l).await.unwrap();
        assert_eq!(h1, h2);
        assert_eq!(
            wait_final(&p2, &h2).await,
            Phase::Exited {
                exit_code: Some(0),
                reason: None
            }
        );
        // One process started: the same supervisor, and the job's output once.
        assert_eq!(LocalProvider::read_pid(&dir), first);
        assert_eq!(p2.logs(&h2, &LogQuery::default()).await.unwrap().text, "started\n");
    }

    #[tokio::test]
    async fn cancel_kills_the_whole_group_even_when_sigterm_is_ignored() {
        let tmp = tempfile::tempdir().unwrap();
        let p = provider(tmp.path(), 1);
        let h = p
            .launch(&launch(
                "k3",
                "trap '' TERM; sleep 300 & echo $! > child; wait",
            ))
            .await
            .unwrap();
        let child_file = p.root.join("k3/work/child");
        for _ in 0..100 {
            if child_file.exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let child: i32 = fs::read_to_string(&child_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        p.cancel(&h, "test").await.unwrap();
        let pgid = LocalProvider::read_pid(&p.root.join("k3")).unwrap();
        assert!(
            !LocalProvider::group_alive(pgid),
            "process group {pgid} survived cancel"
        );
        let stat = fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
        assert!(
            supervise::proc_stat(&stat).is_none_or(|(state, _, _)| state == 'Z'),
            "background child {child} survived cancel"
        );
        p.release(&h).await.unwrap();
        assert!(!p.root.join("k3").exists());
    }

    #[tokio::test]
    async fn sigterm_exit_is_recorded() {
        let tmp = tempfile::tempdir().unwrap();
        let p = provider(tmp.path(), 5);
        let h = p.launch(&launch("k4", "sleep 30")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        p.cancel(&h, "test").await.unwrap();
        let phase = wait_final(&p, &h).await;
        assert_eq!(
            phase,
            Phase::Exited {
                exit_code: Some(143),
                reason: Some("killed by signal 15".into())
            }
        );
    }

    /// The local provider takes no options: anything under `provider_options.local` is a
    /// mistake the job's author hears about, not something silently ignored.
    #[tokio::test]
    async fn options_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let p = provider(tmp.path(), 5);
        for options in [
            serde_json::json!("fast"),
            serde_json::json!({"workdir": "/"}),
            serde_json::json!([1]),
        ] {
            let mut l = launch("k6", "true");
            l.spec.provider_options = Some(options.clone());
            assert!(
                matches!(p.validate(&l.spec), Err(ProviderError::InvalidSpec(m)) if m.contains("provider_options.local")),
                "{options}"
            );
        }
        let mut l = launch("k6", "true");
        l.spec.provider_options = Some(serde_json::json!({}));
        assert!(p.validate(&l.spec).is_ok());
        assert_eq!(p.options_schema()["additionalProperties"], false);
    }

    #[tokio::test]
    async fn unknown_keys_are_lost_and_bad_keys_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let p = provider(tmp.path(), 5);
        let unknown = Handle {
            key: "nope".into(),
            provider_ref: "nope".into(),
        };
        assert!(matches!(
            p.observe(&[unknown]).await.unwrap()[0].phase,
            Phase::Lost { .. }
        ));
        let evil = Handle {
            key: "../x".into(),
            provider_ref: "../x".into(),
        };
        assert!(matches!(
            p.observe(&[evil]).await,
            Err(ProviderError::NotFound(_))
        ));
        let mut l = launch("k5", "true");
        l.spec.command.clear();
        assert!(
            matches!(p.launch(&l).await, Err(ProviderError::InvalidSpec(m)) if m.contains("command"))
        );
    }

    fn step(command: &str, ignore_error: bool) -> offload_provider::Step {
        offload_provider::Step {
            role: offload_provider::StepRole::Executor,
            image: "alpine".into(),
            command: vec!["sh".into(), "-c".into(), command.into()],
            workdir: Some("/vol/A".into()),
            env: [("STEP".to_string(), "x".to_string())].into(),
            stdin: None,
            stdout: None,
            stderr: None,
            ignore_error,
            host_reads: vec![],
            host_writes: vec![],
        }
    }

    /// Executors run in order at the task's own paths, sharing its volume; a failure that
    /// ignores errors lets the next one run, one that does not stops the rest; each step's
    /// exit code, times and output are the supervisor's record.
    #[tokio::test]
    async fn steps_run_in_order_sharing_volumes_at_their_paths() {
        let tmp = tempfile::tempdir().unwrap();
        let p = provider(tmp.path(), 5);
        let mut l = launch("k7", "unused");
        l.spec.command.clear();
        let mut first = step("echo one > /vol/A/shared; pwd; echo $STEP $TOKEN; exit 3", true);
        first.stdout = None;
        let mut second = step("cat /vol/A/shared; cat /vol/A/shared >&2", false);
        second.stderr = Some("/vol/A/err.txt".into());
        let third = step("exit 5", false);
        let fourth = step("echo never", false);
        l.spec.steps = Some(offload_provider::StepPlan {
            steps: vec![first, second, third, fourth],
            volumes: vec!["/vol/A".into()],
        });
        p.validate(&l.spec).unwrap();
        let h = p.launch(&l).await.unwrap();
        let phase = wait_final(&p, &h).await;
        assert_eq!(
            phase,
            Phase::Exited {
                exit_code: Some(5),
                reason: None
            }
        );
        let runs = p.step_runs(&h, 1024).await.unwrap();
        let codes: Vec<_> = runs.iter().map(|r| r.exit_code).collect();
        assert_eq!(codes, [Some(3), Some(0), Some(5), None]);
        assert_eq!(runs[0].log, "/vol/A\nx s3cret\n");
        assert_eq!(runs[1].log, "one\n");
        assert!(runs[2].started.is_some() && runs[2].finished >= runs[2].started);
        assert!(runs[3].started.is_none());
        assert_eq!(
            fs::read_to_string(p.root.join("k7/work/vol/A/err.txt")).unwrap(),
            "one\n"
        );
        let log = p.logs(&h, &LogQuery::default()).await.unwrap();
        assert_eq!(log.text, "/vol/A\nx s3cret\none\n");
        // The host's own /vol was never touched.
        assert!(!Path::new("/vol/A/shared").exists());
    }

    #[tokio::test]
    async fn steps_under_the_hosts_folders_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let p = provider(tmp.path(), 5);
        let mut l = launch("k8", "unused");
        l.spec.steps = Some(offload_provider::StepPlan {
            steps: vec![step("true", false)],
            volumes: vec!["/usr/local/data".into()],
        });
        let err = p.validate(&l.spec).unwrap_err().to_string();
        assert!(err.contains("steps.volumes[0]") && err.contains("/usr"), "{err}");
    }
}
