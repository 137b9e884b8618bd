//! What every provider that runs workloads of several steps does the same way, whatever
//! its runtime: an executor that ignores errors, sends stdin, stdout or stderr to files, or
//! has a working directory its runtime cannot set runs through `/bin/sh` (which its image
//! must have, as TESK requires), printing its own exit code as `offload-step-exit: N` when
//! it ignores errors; a failed filer step is told by its last `offload-filer:` line; and
//! the filer's program in its image.

use crate::{Step, StepPlan, StepRole};

/// The line a wrapped executor prints (to stderr) with its exit code.
pub const EXIT_MARK: &str = "offload-step-exit: ";
/// The mark of the filer's line that says why it failed.
pub const FILER_MARK: &str = "offload-filer: ";
/// The filer's variable for the root its paths are under: `/` in a container of its own.
pub const FILER_ROOT_ENV: &str = "OFFLOAD_FILER_ROOT";

/// The filer's program in its image, before `filer stage-in` or `filer stage-out`: the
/// gateway's own image has `offload` on its path.
pub fn default_filer_command() -> Vec<String> {
    vec!["offload".into()]
}

/// What an executor's container runs.
#[derive(Debug, PartialEq)]
pub struct Run {
    pub command: Vec<String>,
    /// The variables the `/bin/sh` wrapper reads (the files of stdin, stdout and stderr,
    /// the working directory), none without one.
    pub env: Vec<(String, String)>,
}

/// Where a runtime sets an executor's working directory.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Workdir {
    /// In the container's own settings (Kubernetes' `workingDir`, ECS's `workingDirectory`).
    Runtime,
    /// Nowhere (ACI): the wrapper makes it and goes there.
    Shell,
}

/// What an executor's container runs: its command through `/bin/sh` when it needs one (it
/// ignores errors, names a file for stdin, stdout or stderr, or has a working directory the
/// runtime cannot set), else its command as it is.
pub fn run(step: &Step, workdir: Workdir) -> Run {
    let redirects = [
        ("OFFLOAD_STDIN", &step.stdin, "<"),
        ("OFFLOAD_STDOUT", &step.stdout, ">"),
        ("OFFLOAD_STDERR", &step.stderr, "2>"),
    ];
    let cd = step.workdir.as_ref().filter(|_| workdir == Workdir::Shell);
    if !step.ignore_error && cd.is_none() && redirects.iter().all(|(_, p, _)| p.is_none()) {
        return Run {
            command: step.command.clone(),
            env: vec![],
        };
    }
    let mut script = r#""$@""#.to_string();
    let mut env = vec![];
    for (var, path, op) in redirects {
        if let Some(p) = path {
            script += &format!(r#" {op} "${var}""#);
            env.push((var.to_string(), p.clone()));
        }
    }
    script = match step.ignore_error {
        true => format!(r#"{script}; echo "{EXIT_MARK}$?" >&2; exit 0"#),
        false => format!("exec {script}"),
    };
    if let Some(dir) = cd {
        script = format!(r#"mkdir -p "$OFFLOAD_WORKDIR" && cd "$OFFLOAD_WORKDIR" && {script}"#);
        env.push(("OFFLOAD_WORKDIR".to_string(), dir.clone()));
    }
    let command = ["/bin/sh", "-c", &script, "offload-step"]
        .into_iter()
        .map(String::from)
        .chain(step.command.iter().cloned())
        .collect();
    Run { command, env }
}

/// The roles of a plan's steps as one text (`stage_in,executor,stage_out`), for a label,
/// tag or annotation of its workload: how its end tells whose step failed.
pub fn roles_text(plan: &StepPlan) -> String {
    plan.steps
        .iter()
        .filter_map(|s| serde_json::to_value(s.role).ok())
        .filter_map(|v| v.as_str().map(String::from))
        .collect::<Vec<_>>()
        .join(",")
}

/// The roles [`roles_text`] wrote.
pub fn roles_of(text: &str) -> Vec<StepRole> {
    text.split(',')
        .filter_map(|r| serde_json::from_value(serde_json::Value::String(r.into())).ok())
        .collect()
}

/// The exit code a wrapped executor that ignores errors printed, from its log.
pub fn said_exit(log: &str) -> Option<i32> {
    log.lines()
        .rev()
        .find_map(|l| l.strip_prefix(EXIT_MARK))
        .and_then(|c| c.trim().parse().ok())
}

/// A failed filer step's reason, from what it wrote: its last `offload-filer:` line, else
/// its last line.
pub fn filer_failure(role: StepRole, said: &str) -> String {
    let line = said
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix(FILER_MARK))
        .or_else(|| said.lines().rev().find(|l| !l.trim().is_empty()))
        .unwrap_or("the filer said nothing");
    let what = match role {
        StepRole::StageIn => "staging the inputs failed",
        _ => "staging the outputs failed",
    };
    format!("{what}: {line}")
}

/// A failed filer step's reason, where the runtime tells of the failure (`given`) but not
/// why: the filer's own line from `said`, its log, or `given` when that log is empty or
/// could not be read.
pub fn filer_reason(role: StepRole, said: &str, given: Option<String>) -> Option<String> {
    match said.trim().is_empty() {
        true => given,
        false => Some(filer_failure(role, said)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn step(ignore_error: bool, stdout: Option<&str>) -> Step {
        Step {
            ignore_error,
            stdout: stdout.map(String::from),
            env: BTreeMap::new(),
            ..crate::conformance::step(StepRole::Executor, "alpine", &["echo", "hi"])
        }
    }

    #[test]
    fn only_what_needs_a_shell_gets_one() {
        let plain = run(&step(false, None), Workdir::Shell);
        assert_eq!(plain, Run { command: vec!["echo".into(), "hi".into()], env: vec![] });
        let Run { command, env } = run(&step(false, Some("/out/x")), Workdir::Runtime);
        assert_eq!(command[..3], ["/bin/sh", "-c", r#"exec "$@" > "$OFFLOAD_STDOUT""#]);
        assert_eq!(command[3..], ["offload-step", "echo", "hi"]);
        assert_eq!(env, [("OFFLOAD_STDOUT".to_string(), "/out/x".to_string())]);
        let command = run(&step(true, None), Workdir::Runtime).command;
        assert_eq!(command[2], r#""$@"; echo "offload-step-exit: $?" >&2; exit 0"#);
        let mut elsewhere = step(false, None);
        elsewhere.workdir = Some("/work dir".into());
        assert_eq!(run(&elsewhere, Workdir::Runtime).command, ["echo", "hi"]);
        let Run { command, env } = run(&elsewhere, Workdir::Shell);
        assert_eq!(
            command[2],
            r#"mkdir -p "$OFFLOAD_WORKDIR" && cd "$OFFLOAD_WORKDIR" && exec "$@""#
        );
        assert_eq!(env, [("OFFLOAD_WORKDIR".to_string(), "/work dir".to_string())]);
    }

    #[test]
    fn what_steps_said_is_read_back() {
        assert_eq!(said_exit("a\noffload-step-exit: 3\n"), Some(3));
        assert_eq!(said_exit("a\n"), None);
        assert_eq!(
            filer_failure(StepRole::StageIn, "x\noffload-filer: s3://b/k: not found\nbye\n"),
            "staging the inputs failed: s3://b/k: not found"
        );
        assert_eq!(
            filer_failure(StepRole::StageOut, "panic\n\n"),
            "staging the outputs failed: panic"
        );
        assert_eq!(
            filer_failure(StepRole::StageIn, ""),
            "staging the inputs failed: the filer said nothing"
        );
        let given = Some("exited with code 1".to_string());
        assert_eq!(filer_reason(StepRole::StageIn, " \n", given.clone()), given);
        assert_eq!(
            filer_reason(StepRole::StageIn, "offload-filer: x: no\n", given).as_deref(),
            Some("staging the inputs failed: x: no")
        );
    }
}
