//! Workloads of several steps on the host (a GA4GH TES task's executors, with the gateway's
//! filer before and after them). The supervisor (`supervise`) runs the steps one after
//! another, each a process it forks and waits for, and writes each one's start and exit
//! code in the launch's folder, out of the steps' reach: what the gateway learns of each
//! step comes from the supervisor, not from the job.
//!
//! An executor sees the task's paths where the task says they are (`/data/in.txt`, `/tmp`):
//! it runs in a mount namespace of its own whose root is a fresh tmpfs holding the host's
//! system folders (bound as they are, read-only by the sandbox) and, at each of the task's
//! top folders, that folder of the launch's `work/`. So every executor, and the filer,
//! share the same files. The executors' sandbox is the job's (`sandbox`); the filer runs
//! without the mount namespace (it reaches the task's paths under `work/`, its
//! `OFFLOAD_FILER_ROOT`), in a sandbox of its own that adds its program and the tenant's
//! `file://` folders, with the deployment's credentials (`AWS_*`, `GOOGLE_*`, `AZURE_*` of
//! the gateway's environment) and never the job's variables or secrets. A sandbox of its own
//! is a Landlock domain of its own: no executor, nor what one leaves running, can trace it.
//!
//! Each step's stdout and stderr go to `step-N.log` (unless it names files for them); the
//! job's log is those logs one after another.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use offload_provider::steps::FILER_ROOT_ENV;
use offload_provider::{Launch, StepPlan, StepRole, StepRun};

use super::supervise::{ChildStep, Mounts};

/// The host's folders a step's root holds as they are; a task's path may not lie in one.
pub const SYSTEM: [&str; 12] = [
    "bin", "sbin", "usr", "lib", "lib32", "lib64", "libx32", "etc", "opt", "sys", "dev", "proc",
];

/// The file that records the steps' roles, for what the provider reads back.
pub const ROLES: &str = "steps.json";

fn c(bytes: &[u8]) -> std::io::Result<CString> {
    CString::new(bytes)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "a NUL in a value"))
}

fn c_path(path: &Path) -> std::io::Result<CString> {
    c(path.as_os_str().as_bytes())
}

/// `path` (absolute, in the task's view) under `work`.
pub fn under(work: &Path, path: &str) -> PathBuf {
    work.join(path.trim_start_matches('/'))
}

/// The first folder of an absolute path (`data` for `/data/x`).
fn top(path: &str) -> Option<&str> {
    path.trim_start_matches('/').split('/').next().filter(|t| !t.is_empty())
}

/// Every absolute path a plan names, with the field it comes from.
fn paths(plan: &StepPlan) -> Vec<(String, &str)> {
    let mut all: Vec<(String, &str)> = plan
        .volumes
        .iter()
        .enumerate()
        .map(|(i, v)| (format!("steps.volumes[{i}]"), v.as_str()))
        .collect();
    for (i, step) in plan.steps.iter().enumerate() {
        for (name, p) in [
            ("workdir", &step.workdir),
            ("stdin", &step.stdin),
            ("stdout", &step.stdout),
            ("stderr", &step.stderr),
        ] {
            if let Some(p) = p {
                all.push((format!("steps (step {i}) {name}"), p.as_str()));
            }
        }
    }
    all
}

/// The top folders of the read paths outside the host's system folders (a read path such
/// as `/srv/tools/bin`, which an executor's root then holds too).
fn read_tops(sandbox: &super::sandbox::Sandbox) -> BTreeSet<String> {
    sandbox
        .read_paths()
        .filter_map(|p| p.to_str().and_then(top).map(String::from))
        .filter(|t| !SYSTEM.contains(&t.as_str()) && t != "proc")
        .collect()
}

/// Why the local provider cannot run `plan`, naming the field.
pub fn refusal(
    plan: &StepPlan,
    namespaces: bool,
    filer: Option<&Path>,
    sandbox: &super::sandbox::Sandbox,
) -> Option<String> {
    if !namespaces {
        return Some(
            "steps: the local provider puts a task's files at its paths in a mount namespace, \
             which this host does not let it make (it needs root, or unprivileged user namespaces)"
                .into(),
        );
    }
    let shared = read_tops(sandbox);
    for (field, path) in paths(plan) {
        if let Some(t) = top(path).filter(|t| SYSTEM.contains(t) || shared.contains(*t)) {
            return Some(format!(
                "{field}: {path:?} lies in /{t}, a folder the local provider shares from the host; use another folder"
            ));
        }
    }
    if plan.steps.iter().any(|s| s.role.is_filer()) && filer.is_none() {
        return Some(
            "steps: inputs and outputs need the filer, and this local provider has none (set its filer)"
                .into(),
        );
    }
    None
}

/// The variables of the gateway's own that the filer gets: the deployment's credentials and
/// settings for the object stores.
fn deployment_env() -> Vec<(String, String)> {
    std::env::vars()
        .filter(|(k, _)| {
            ["AWS_", "GOOGLE_", "AZURE_", "SSL_CERT_"]
                .iter()
                .any(|p| k.starts_with(p))
        })
        .collect()
}

/// What the supervisor needs to run the steps of `launch` in `dir`, prepared before the fork;
/// creates the task's folders in `work/`.
pub struct Prepared {
    pub steps: Vec<ChildStep>,
    /// The executors' mount namespace.
    pub mounts: Mounts,
    pub null: CString,
    /// The executors' sandbox and the filer's, by [`ChildStep::ruleset`].
    pub rulesets: [Option<std::os::fd::OwnedFd>; 2],
}

pub fn prepare(
    dir: &Path,
    launch: &Launch,
    plan: &StepPlan,
    sandbox: &super::sandbox::Sandbox,
    filer: Option<&Path>,
) -> std::io::Result<Prepared> {
    let work = dir.join("work");
    let root = dir.join("root");
    std::fs::create_dir_all(&root)?;
    // Every folder the task names exists from the start, in work/.
    let mut tops: BTreeSet<String> = BTreeSet::from(["tmp".to_string()]);
    for (_, path) in paths(plan) {
        let folder = match plan.volumes.iter().any(|v| v == path) {
            true => path,
            false => path.rsplit_once('/').map_or("/", |(d, _)| if d.is_empty() { "/" } else { d }),
        };
        std::fs::create_dir_all(under(&work, folder))?;
        if let Some(t) = top(path) {
            tops.insert(t.to_string());
        }
    }
    for step in &plan.steps {
        if let Some(w) = &step.workdir {
            std::fs::create_dir_all(under(&work, w))?;
        }
    }
    std::fs::create_dir_all(work.join("tmp"))?;
    let roles: Vec<StepRole> = plan.steps.iter().map(|s| s.role).collect();
    std::fs::write(dir.join(ROLES), serde_json::to_vec(&roles)?)?;

    let mut binds: Vec<(CString, CString)> = vec![];
    for system in SYSTEM {
        let host = Path::new("/").join(system);
        if host.exists() {
            binds.push((c_path(&host)?, c_path(&root.join(system))?));
        }
    }
    for t in &tops {
        binds.push((c_path(&work.join(t))?, c_path(&root.join(t))?));
    }
    // Read paths elsewhere (a tool's folder), at their own paths, their folders made first.
    let mut dirs = vec![];
    for read in sandbox.read_paths() {
        let outside = read
            .to_str()
            .and_then(top)
            .is_some_and(|t| !SYSTEM.contains(&t) && t != "proc");
        if !outside {
            continue;
        }
        let relative = read.strip_prefix("/").unwrap_or(read);
        let mut at = root.clone();
        for part in relative.parent().into_iter().flat_map(|p| p.components()) {
            at.push(part);
            dirs.push(c_path(&at)?);
        }
        binds.push((c_path(read)?, c_path(&root.join(relative))?));
    }
    let uid = unsafe { libc::getuid() };
    let gid = unsafe { libc::getgid() };
    let namespace = Mounts {
        root: c_path(&root)?,
        dirs,
        binds,
        user: (uid != 0).then(|| {
            (
                c(format!("{uid} {uid} 1").as_bytes()).expect("digits"),
                c(format!("{gid} {gid} 1").as_bytes()).expect("digits"),
            )
        }),
    };
    // Landlock follows the folders up as the step sees them: a bound folder's rule is on the
    // folder itself, for above it lies the step's root, not work/.
    let bound: Vec<PathBuf> = tops.iter().map(|t| work.join(t)).collect();
    let executors = sandbox
        .ruleset(&work, &[], &bound)
        .map_err(std::io::Error::other)?;
    let path_var = std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into());
    let mut steps = vec![];
    let mut filer_ruleset = None;
    for (i, step) in plan.steps.iter().enumerate() {
        let log = c_path(&dir.join(format!("step-{i}.log")))?;
        let stamp = |what: &str| -> std::io::Result<(CString, CString)> {
            Ok((
                c_path(&dir.join(format!("step-{i}.{what}.tmp")))?,
                c_path(&dir.join(format!("step-{i}.{what}")))?,
            ))
        };
        let host = |p: &Option<String>| p.as_deref().map(|p| c_path(&under(&work, p))).transpose();
        let (program, argv, env, workdir, mounts, ruleset) = if step.role.is_filer() {
            let program = filer.ok_or_else(|| std::io::Error::other("no filer"))?;
            if filer_ruleset.is_none() {
                let reads: Vec<PathBuf> = std::iter::once(program.to_path_buf())
                    .chain(step.host_reads.iter().map(PathBuf::from))
                    .collect();
                let writes: Vec<PathBuf> = step.host_writes.iter().map(PathBuf::from).collect();
                filer_ruleset = Some(
                    sandbox
                        .ruleset(&work, &reads, &writes)
                        .map_err(std::io::Error::other)?,
                );
            }
            let mut env: BTreeMap<String, String> = deployment_env().into_iter().collect();
            env.extend(step.env.clone());
            env.insert("PATH".into(), path_var.clone());
            env.insert("HOME".into(), work.join("tmp").display().to_string());
            env.insert(FILER_ROOT_ENV.into(), work.display().to_string());
            let argv = std::iter::once(program.as_os_str().as_bytes().to_vec())
                .chain(step.command.iter().map(|a| a.as_bytes().to_vec()))
                .collect::<Vec<_>>();
            (c_path(program)?, argv, env, Some(c_path(&work)?), None, 1)
        } else {
            let mut env: BTreeMap<String, String> = BTreeMap::new();
            env.insert("PATH".into(), path_var.clone());
            env.insert("HOME".into(), "/tmp".into());
            env.insert("TMPDIR".into(), "/tmp".into());
            env.insert("OFFLOAD_JOB_ID".into(), launch.job_id.clone());
            env.extend(step.env.clone());
            env.extend(launch.secret_env.clone());
            // Through `sh`, so that a command not found is exit code 127 and a message in
            // the step's log, as in a shell.
            let argv = ["/bin/sh", "-c", super::EXEC, "offload-step"]
                .iter()
                .map(|a| a.as_bytes().to_vec())
                .chain(step.command.iter().map(|a| a.as_bytes().to_vec()))
                .collect::<Vec<_>>();
            let workdir = step.workdir.clone().unwrap_or_else(|| "/tmp".into());
            (c(b"/bin/sh")?, argv, env, Some(c(workdir.as_bytes())?), Some(()), 0)
        };
        let argv = argv.into_iter().map(|a| c(&a)).collect::<Result<Vec<_>, _>>()?;
        let env = env
            .into_iter()
            .map(|(k, v)| c(format!("{k}={v}").as_bytes()))
            .collect::<Result<Vec<_>, _>>()?;
        steps.push(ChildStep {
            program,
            argv,
            env,
            log,
            stdin: host(&step.stdin)?,
            stdout: host(&step.stdout)?,
            stderr: host(&step.stderr)?,
            workdir,
            namespaced: mounts.is_some(),
            ruleset,
            ignore_error: step.ignore_error,
            start: stamp("start")?,
            exit: stamp("exit")?,
            ptrs: Default::default(),
        }
        .ready());
    }
    Ok(Prepared {
        steps,
        null: c(b"/dev/null")?,
        mounts: namespace,
        rulesets: [executors, filer_ruleset.flatten()],
    })
}

/// How each step of the launch in `dir` went, with the last `tail` bytes of its log.
pub fn runs(dir: &Path, tail: usize) -> Vec<StepRun> {
    let roles: Vec<StepRole> = std::fs::read(dir.join(ROLES))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let modified = |p: PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    roles
        .into_iter()
        .enumerate()
        .map(|(i, role)| {
            let exit = dir.join(format!("step-{i}.exit"));
            StepRun {
                role,
                exit_code: std::fs::read_to_string(&exit)
                    .ok()
                    .and_then(|t| t.trim().parse().ok()),
                started: modified(dir.join(format!("step-{i}.start"))),
                finished: modified(exit),
                log: tail_of(&dir.join(format!("step-{i}.log")), tail),
            }
        })
        .collect()
}

/// The last `max` bytes of a file, as text; empty when it cannot be read.
fn tail_of(path: &Path, max: usize) -> String {
    let bytes = std::fs::read(path).unwrap_or_default();
    let from = bytes.len().saturating_sub(max);
    String::from_utf8_lossy(&bytes[from..]).into_owned()
}

/// When a step of the filer failed: why, in its own last line.
pub fn filer_failure(dir: &Path) -> Option<String> {
    let runs = runs(dir, 4096);
    let failed = runs
        .iter()
        .rev()
        .find(|r| r.exit_code.is_some_and(|c| c != 0))?;
    failed
        .role
        .is_filer()
        .then(|| offload_provider::steps::filer_failure(failed.role, &failed.log))
}

/// The step logs of the launch in `dir`, in order: the job's log is them one after another.
pub fn logs(dir: &Path) -> Vec<PathBuf> {
    (0..)
        .map(|i| dir.join(format!("step-{i}.log")))
        .take_while(|p| p.exists())
        .collect()
}
