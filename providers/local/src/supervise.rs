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
        })
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
        let job = libc::fork();
        if job < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if job == 0 {
            return self.sandbox();
        }
        self.supervise(job)
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
        libc::syscall(libc::SYS_close_range, 0u32, u32::MAX, 0u32);
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
