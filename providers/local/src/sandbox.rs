//! What a local job may reach of the host, enforced by Landlock (Linux's unprivileged
//! sandbox), which the job's process applies to itself before it starts the command. The
//! job reads and runs what is under the configured read paths (the system's programs and
//! libraries), writes the null and random devices, and owns its working folder; nothing
//! else. So it cannot reach the gateway's database, key or config, the provider's control
//! files (its own or another job's), nor another job's folder. A sandboxed process also
//! cannot trace a process outside its sandbox, and from Landlock ABI 6 (Linux 6.12) cannot
//! signal one or connect to its abstract Unix sockets: each job is a sandbox of its own, so
//! jobs cannot reach one another nor the gateway that way either. The processes' folders of
//! `/proc` are not among the read paths, for a sandboxed process may still read another's
//! `/proc/PID/environ`.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use landlock::{
    path_beneath_rules, Access, AccessFs, CompatLevel, Compatible, Ruleset, RulesetAttr,
    RulesetCreatedAttr, Scope, ABI,
};

/// The Landlock ABI from which a sandbox also scopes signals and abstract Unix sockets.
pub const FULL_ABI: i32 = 6;

/// Devices a job may write (and read).
const DEVICES: [&str; 4] = ["/dev/null", "/dev/zero", "/dev/random", "/dev/urandom"];

/// The default read paths: where a host keeps its programs, libraries and their settings,
/// and what of `/proc` describes the host rather than a process. The processes' own
/// folders of `/proc` are left out, `/proc/self` included: Landlock keeps a sandboxed
/// process from tracing another, but not from reading its `environ`.
pub fn default_read_paths() -> Vec<PathBuf> {
    [
        "/bin",
        "/sbin",
        "/usr",
        "/lib",
        "/lib32",
        "/lib64",
        "/libx32",
        "/etc",
        "/opt",
        "/sys",
        "/proc/cpuinfo",
        "/proc/meminfo",
        "/proc/stat",
        "/proc/loadavg",
        "/proc/uptime",
        "/proc/version",
        "/proc/filesystems",
        "/proc/sys",
    ]
    .into_iter()
    .map(PathBuf::from)
    .collect()
}

/// The running kernel's Landlock ABI version (0: none).
pub fn kernel_abi() -> i32 {
    // landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION)
    let version = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            1u32,
        )
    };
    version.max(0) as i32
}

#[derive(Debug, Clone)]
pub struct Sandbox {
    abi: i32,
    read: Vec<PathBuf>,
}

impl Sandbox {
    pub fn new(read: Vec<PathBuf>) -> Sandbox {
        Sandbox {
            abi: kernel_abi(),
            read,
        }
    }

    /// Whether jobs are sandboxed at all (the kernel has Landlock).
    pub fn enforced(&self) -> bool {
        self.abi >= 1
    }

    /// Whether the sandbox also keeps jobs from signalling processes outside it.
    pub fn full(&self) -> bool {
        self.abi >= FULL_ABI
    }

    /// The read paths that exist, as given.
    pub fn read_paths(&self) -> impl Iterator<Item = &PathBuf> {
        self.read.iter().filter(|p| p.exists())
    }

    /// Whether `path` is readable by jobs (it lies under a read path).
    pub fn exposes(&self, path: &Path) -> bool {
        let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        self.read.iter().any(|r| {
            let r = std::fs::canonicalize(r).unwrap_or_else(|_| r.clone());
            path.starts_with(r)
        })
    }

    /// The ruleset of a job whose working folder is `work`, for the job's process to
    /// enforce on itself; `None` where the kernel has no Landlock. `reads` and `writes` are
    /// more folders (or files) it may read (and run), or change: the filer's program and
    /// the tenant's `file://` folders, for the filer step alone.
    pub fn ruleset(
        &self,
        work: &Path,
        reads: &[PathBuf],
        writes: &[PathBuf],
    ) -> Result<Option<OwnedFd>, String> {
        if !self.enforced() {
            return Ok(None);
        }
        let abi = ABI::from(self.abi);
        let existing = |paths: Vec<PathBuf>| -> Vec<PathBuf> {
            paths.into_iter().filter(|p| p.exists()).collect()
        };
        let devices = existing(DEVICES.iter().map(PathBuf::from).collect());
        let fail = |e: landlock::RulesetError| format!("building the job's sandbox: {e}");
        let mut ruleset = Ruleset::default()
            .set_compatibility(CompatLevel::HardRequirement)
            .handle_access(AccessFs::from_all(abi))
            .map_err(fail)?;
        if self.full() {
            ruleset = ruleset.scope(Scope::from_all(abi)).map_err(fail)?;
        }
        let ruleset = ruleset
            .create()
            .map_err(fail)?
            .add_rules(path_beneath_rules(
                existing(self.read.clone()),
                AccessFs::from_read(abi),
            ))
            .map_err(fail)?
            .add_rules(path_beneath_rules(
                devices,
                AccessFs::from_read(abi) | AccessFs::from_file(abi),
            ))
            .map_err(fail)?
            .add_rules(path_beneath_rules([work], AccessFs::from_all(abi)))
            .map_err(fail)?
            .add_rules(path_beneath_rules(
                existing(reads.to_vec()),
                AccessFs::from_read(abi),
            ))
            .map_err(fail)?
            .add_rules(path_beneath_rules(
                existing(writes.to_vec()),
                AccessFs::from_all(abi),
            ))
            .map_err(fail)?;
        Ok(ruleset.into())
    }
}
