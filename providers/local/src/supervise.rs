//! Starts a job so that what the gateway learns of it comes from a process the job cannot
//! reach. The forked child becomes the job's supervisor: it leads the job's process group,
//! writes its own pid, forks the job (which enforces its sandbox and runs the command), then
//! waits for it, writes its exit code, and stays until every process the job left has
//! ended (it is their subreaper), ignoring the SIGTERM a cancel sends the group. It is not
//! sandboxed, so the job can neither signal nor trace it, and its files lie outside the
//! job's sandbox: a job cannot forge its exit code or point the gateway at a foreign
//! process. It outlives a gateway crash, so the code is there for the gateway that comes
//! back.
//!
//! The supervisor is a fork of the gateway that never runs `exec`: between the fork and
//! its exit it makes system calls only, on paths and bytes prepared before the fork (a
//! forked copy of a multi-threaded process may not allocate or take a lock).

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// The files the supervisor writes in a launch's folder.
pub const PID: &str = "pid";
pub const EXIT_CODE: &str = "exit_code";

/// What the supervisor and the job need, prepared before the fork.
pub struct Plan {
    pid_tmp: CString,
    pid: CString,
    exit_tmp: CString,
    exit: CString,
    /// The job's Landlock ruleset, which it enforces on itself.
    ruleset: Option<OwnedFd>,
    /// A workload of several steps: the supervisor runs them one after another.
    steps: Option<super::steps::Prepared>,
}

/// The mount namespace an executor step makes for itself: `root` becomes a tmpfs holding
/// each bind (`source` on the host, `target` under `root`), then the step's root.
pub struct Mounts {
    pub root: CString,
    /// Folders made in the root, in order, before the binds.
    pub dirs: Vec<CString>,
    pub binds: Vec<(CString, CString)>,
    /// For a gateway not run as root: a user namespace, with these uid and gid maps.
    pub user: Option<(CString, CString)>,
}

/// One step of a workload of several steps, ready to be forked and run with system calls
/// only.
pub struct ChildStep {
    pub program: CString,
    pub argv: Vec<CString>,
    /// `NAME=value` items.
    pub env: Vec<CString>,
    /// Where its stdout and stderr go unless it names files for them.
    pub log: CString,
    /// Host paths of the files for its stdin, stdout and stderr.
    pub stdin: Option<CString>,
    pub stdout: Option<CString>,
    pub stderr: Option<CString>,
    /// Where it starts, in its own view.
    pub workdir: Option<CString>,
    /// Whether it runs in the executors' mount namespace.
    pub namespaced: bool,
    /// Which of the plan's rulesets it enforces (0: the executors', 1: the filer's).
    pub ruleset: usize,
    pub ignore_error: bool,
    /// Written (a temporary file, then its name) as it starts and as it ends.
    pub start: (CString, CString),
    pub exit: (CString, CString),
    /// `argv` and `env` as execve takes them ([`ChildStep::ready`]).
    pub ptrs: Pointers,
}

/// NULL-terminated pointer arrays into a step's strings, built before the fork (a forked
/// copy of the gateway may not allocate). The strings' bytes live on the heap, where they
/// stay however the step is moved.
#[derive(Default)]
pub struct Pointers {
    argv: Vec<*const libc::c_char>,
    env: Vec<*const libc::c_char>,
}

// SAFETY: the pointers point into the step's own strings, which are never changed.
unsafe impl Send for Pointers {}
unsafe impl Sync for Pointers {}

impl ChildStep {
    /// Builds the pointer arrays; the step is then ready to run.
    pub fn ready(mut self) -> ChildStep {
        self.ptrs = pointers(&self);
        self
    }
}

fn pointers(step: &ChildStep) -> Pointers {
    let list = |items: &[CString]| {
        items
            .iter()
            .map(|c| c.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect()
    };
    Pointers {
        argv: list(&step.argv),
        env: list(&step.env),
    }
}

fn c_path(path: &Path) -> std::io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "a NUL in a path"))
}

impl Plan {
    pub fn new(dir: &Path, ruleset: Option<OwnedFd>) -> std::io::Result<Plan> {
        Ok(Plan {
            pid_tmp: c_path(&dir.join("pid.tmp"))?,
            pid: c_path(&dir.join(PID))?,
            exit_tmp: c_path(&dir.join("exit.tmp"))?,
            exit: c_path(&dir.join(EXIT_CODE))?,
            ruleset,
            steps: None,
        })
    }

    /// The plan of a workload of several steps.
    pub fn with_steps(mut self, steps: super::steps::Prepared) -> Plan {
        self.steps = Some(steps);
        self
    }

    /// Runs in the forked child, before `exec`: the supervisor's life (it never returns),
    /// or in the job's process, its sandbox (it returns, and the command is started).
    ///
    /// # Safety
    /// Only between `fork` and `exec` (as `CommandExt::pre_exec`).
    pub unsafe fn in_child(&self) -> std::io::Result<()> {
        // The gateway's handler of SIGCHLD must not run here.
        libc::signal(libc::SIGCHLD, libc::SIG_DFL);
        // Orphans of the job become the supervisor's children, so it outlives them all.
        if libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if let Some(steps) = &self.steps {
            self.supervise_steps(steps);
        }
        let job = libc::fork();
        if job < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if job == 0 {
            return self.sandbox();
        }
        self.supervise(job)
    }

    /// The supervisor of a workload of several steps: runs each in a child of its own, in
    /// order, records when each started and how it ended, and stops at the first that
    /// fails (unless it ignores errors) or is killed. Never returns.
    unsafe fn supervise_steps(&self, plan: &super::steps::Prepared) -> ! {
        for signal in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::signal(signal, libc::SIG_IGN);
        }
        // Nothing of the gateway's stays open here but the steps' rulesets.
        let mut keep: [libc::c_int; 2] = [-1, -1];
        for (i, r) in plan.rulesets.iter().enumerate() {
            if let Some(fd) = r {
                keep[i] = fd.as_raw_fd();
            }
        }
        close_all_but(&keep);
        write_number(&self.pid_tmp, &self.pid, libc::getpid() as i64);
        let mut overall: i32 = 0;
        for (i, step) in plan.steps.iter().enumerate() {
            write_number(&step.start.0, &step.start.1, i as i64);
            let child = libc::fork();
            if child < 0 {
                overall = 255;
                break;
            }
            if child == 0 {
                run_step(step, plan);
            }
            let mut status = 0;
            while libc::waitpid(child, &mut status, 0) < 0 {
                if *libc::__errno_location() != libc::EINTR {
                    libc::_exit(1);
                }
            }
            let signalled = libc::WIFSIGNALED(status);
            let code = if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else if signalled {
                128 + libc::WTERMSIG(status)
            } else {
                255
            };
            write_number(&step.exit.0, &step.exit.1, code as i64);
            if signalled || (code != 0 && !step.ignore_error) {
                overall = code;
                break;
            }
        }
        write_number(&self.exit_tmp, &self.exit, overall as i64);
        loop {
            if libc::waitpid(-1, std::ptr::null_mut(), 0) < 0
                && *libc::__errno_location() == libc::ECHILD
            {
                libc::_exit(0);
            }
        }
    }

    /// In the job's process: enforces its sandbox.
    unsafe fn sandbox(&self) -> std::io::Result<()> {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0);
        let Some(ruleset) = &self.ruleset else {
            return Ok(());
        };
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
            || libc::syscall(libc::SYS_landlock_restrict_self, ruleset.as_raw_fd(), 0u32) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// The supervisor: never returns.
    unsafe fn supervise(&self, job: libc::pid_t) -> ! {
        // A cancel signals the whole group; the supervisor stays to record the code.
        for signal in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::signal(signal, libc::SIG_IGN);
        }
        // Nothing of the gateway's stays open here (its spawn waits for its error pipe).
        close_all_but(&[]);
        write_number(&self.pid_tmp, &self.pid, libc::getpid() as i64);
        let mut status = 0;
        while libc::waitpid(job, &mut status, 0) < 0 {
            if *libc::__errno_location() != libc::EINTR {
                libc::_exit(1);
            }
        }
        let code = if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else if libc::WIFSIGNALED(status) {
            128 + libc::WTERMSIG(status)
        } else {
            255
        };
        write_number(&self.exit_tmp, &self.exit, code as i64);
        // Stays while any process the job left lives: the group is the job's until then.
        loop {
            if libc::waitpid(-1, std::ptr::null_mut(), 0) < 0
                && *libc::__errno_location() == libc::ECHILD
            {
                libc::_exit(0);
            }
        }
    }
}

/// Closes every descriptor but those in `keep` (-1 for none): system calls only.
unsafe fn close_all_but(keep: &[libc::c_int]) {
    let mut from: u32 = 0;
    let mut sorted = [u32::MAX; 2];
    for (i, fd) in keep.iter().take(2).enumerate() {
        if *fd >= 0 {
            sorted[i] = *fd as u32;
        }
    }
    sorted.sort_unstable();
    for fd in sorted {
        if fd == u32::MAX {
            break;
        }
        if fd > from {
            libc::syscall(libc::SYS_close_range, from, fd - 1, 0u32);
        }
        from = fd + 1;
    }
    libc::syscall(libc::SYS_close_range, from, u32::MAX, 0u32);
}

/// Says why a step could not start, in its log (fd 2), and ends it with 127.
unsafe fn give_up(what: &[u8]) -> ! {
    let prefix = b"offload: the step could not start: ";
    libc::write(2, prefix.as_ptr().cast(), prefix.len());
    libc::write(2, what.as_ptr().cast(), what.len());
    let errno = *libc::__errno_location();
    let mut digits = [b' ', b'(', b'e', b'r', b'r', b'n', b'o', b' ', b'0', b'0', b'0', b')', b'\n'];
    digits[8] = b'0' + ((errno / 100) % 10) as u8;
    digits[9] = b'0' + ((errno / 10) % 10) as u8;
    digits[10] = b'0' + (errno % 10) as u8;
    libc::write(2, digits.as_ptr().cast(), digits.len());
    libc::_exit(127)
}

/// Opens `path` onto descriptor `fd`, or gives up saying `what`.
unsafe fn open_onto(path: &CString, flags: libc::c_int, fd: libc::c_int, what: &[u8]) {
    let opened = libc::open(path.as_ptr(), flags, 0o644);
    if opened < 0 || libc::dup2(opened, fd) < 0 {
        give_up(what);
    }
    if opened != fd {
        libc::close(opened);
    }
}

/// In a step's own process: its files, its mount namespace, its sandbox, then its program.
/// Never returns.
unsafe fn run_step(step: &ChildStep, plan: &super::steps::Prepared) -> ! {
    let ptrs = &step.ptrs;
    libc::signal(libc::SIGTERM, libc::SIG_DFL);
    libc::signal(libc::SIGINT, libc::SIG_DFL);
    libc::signal(libc::SIGHUP, libc::SIG_DFL);
    libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0);
    let write = libc::O_WRONLY | libc::O_CREAT;
    open_onto(&step.log, write | libc::O_APPEND, 1, b"its log");
    open_onto(&step.log, write | libc::O_APPEND, 2, b"its log");
    match &step.stdin {
        Some(p) => open_onto(p, libc::O_RDONLY, 0, b"its stdin"),
        None => open_onto(&plan.null, libc::O_RDONLY, 0, b"/dev/null"),
    }
    if let Some(p) = &step.stdout {
        open_onto(p, write | libc::O_TRUNC, 1, b"its stdout");
    }
    if let Some(p) = &step.stderr {
        open_onto(p, write | libc::O_TRUNC, 2, b"its stderr");
    }
    if step.namespaced {
        enter_namespace(&plan.mounts);
    }
    if let Some(dir) = &step.workdir {
        if libc::chdir(dir.as_ptr()) != 0 {
            give_up(b"its workdir");
        }
    }
    if let Some(ruleset) = &plan.rulesets[step.ruleset] {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
            || libc::syscall(libc::SYS_landlock_restrict_self, ruleset.as_raw_fd(), 0u32) != 0
        {
            give_up(b"its sandbox");
        }
    }
    libc::execve(step.program.as_ptr(), ptrs.argv.as_ptr(), ptrs.env.as_ptr());
    give_up(b"its program")
}

/// Makes the executors' root: a mount namespace (and a user namespace when not root), a
/// tmpfs at the root folder with the binds in it, then `chroot` into it.
unsafe fn enter_namespace(m: &Mounts) {
    let mut flags = libc::CLONE_NEWNS;
    if m.user.is_some() {
        flags |= libc::CLONE_NEWUSER;
    }
    if libc::unshare(flags) != 0 {
        give_up(b"its mount namespace");
    }
    if let Some((uid_map, gid_map)) = &m.user {
        for (file, text) in [
            (c"/proc/self/setgroups", c"deny"),
            (c"/proc/self/uid_map", uid_map.as_c_str()),
            (c"/proc/self/gid_map", gid_map.as_c_str()),
        ] {
            let fd = libc::open(file.as_ptr(), libc::O_WRONLY);
            let bytes = text.to_bytes();
            if fd < 0 || libc::write(fd, bytes.as_ptr().cast(), bytes.len()) < 0 {
                give_up(b"its user namespace");
            }
            libc::close(fd);
        }
    }
    let none = c"none";
    if libc::mount(none.as_ptr(), c"/".as_ptr(), std::ptr::null(), libc::MS_REC | libc::MS_PRIVATE, std::ptr::null()) != 0 {
        give_up(b"its mounts");
    }
    let tmpfs = c"tmpfs";
    if libc::mount(tmpfs.as_ptr(), m.root.as_ptr(), tmpfs.as_ptr(), 0, c"mode=0755".as_ptr().cast()) != 0 {
        give_up(b"its root");
    }
    for dir in &m.dirs {
        libc::mkdir(dir.as_ptr(), 0o755);
    }
    for (source, target) in &m.binds {
        libc::mkdir(target.as_ptr(), 0o755);
        if libc::mount(source.as_ptr(), target.as_ptr(), std::ptr::null(), libc::MS_BIND | libc::MS_REC, std::ptr::null()) != 0 {
            give_up(b"a folder of its root");
        }
    }
    if libc::chroot(m.root.as_ptr()) != 0 || libc::chdir(c"/".as_ptr()) != 0 {
        give_up(b"its root");
    }
}

/// Writes `n` and a newline to `tmp`, then renames it to `path`: system calls only.
unsafe fn write_number(tmp: &CString, path: &CString, n: i64) {
    let mut digits = [0u8; 24];
    let mut at = digits.len() - 1;
    digits[at] = b'\n';
    let mut rest = n.unsigned_abs();
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    if n < 0 {
        at -= 1;
        digits[at] = b'-';
    }
    let fd = libc::open(
        tmp.as_ptr(),
        libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC,
        0o600,
    );
    if fd < 0 {
        return;
    }
    libc::write(fd, digits[at..].as_ptr().cast(), digits.len() - at);
    libc::close(fd);
    libc::rename(tmp.as_ptr(), path.as_ptr());
}

/// A process's state letter, process group and start time (clock ticks since boot), from
/// `/proc/PID/stat` (`pid (comm) state ppid pgrp ... starttime`, the 22nd field; comm may
/// hold spaces and parentheses).
pub fn proc_stat(stat: &str) -> Option<(char, i32, u64)> {
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    let pgrp = fields.get(2)?.parse().ok()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((state, pgrp, start))
}
