//! The pre-receive hook (`serve --pre-receive-hook PATH`): an executable run once per
//! push, after its pack is indexed and checked and before anything of it is stored or
//! any ref moves, with git's contract: one line `<old> <new> <ref>` per command on its
//! standard input; exit 0 accepts the push, anything else refuses every command.
//!
//! It runs directly (no shell), in the server's environment plus `GIT_DIR` (a
//! directory `git` can read holding the pushed objects), `GIT_PUSH_OPTION_COUNT` and
//! `GIT_PUSH_OPTION_<n>`, `STOWAGE_REPO`, `STOWAGE_USER` (when known) and
//! `STOWAGE_PUSH_JSON`. What it writes to standard output and error is shown to the
//! pusher as `remote:` lines. Fail-closed: a hook that cannot start, or that runs past
//! its time limit (killed with its process group), refuses the push.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// The hook and its time limit.
#[derive(Debug, Clone)]
pub struct PreReceive {
    pub path: PathBuf,
    /// `--hook-timeout-secs` (30 by default).
    pub timeout: Duration,
}

/// What one push gives its hook.
#[derive(Debug)]
pub struct HookInput<'a> {
    /// `<old> <new> <ref>` per command.
    pub lines: Vec<String>,
    pub push_options: &'a [String],
    pub repo: &'a str,
    pub user: Option<&'a str>,
    /// A directory `git` can read, holding the pushed objects.
    pub git_dir: &'a Path,
    /// The JSON description of the push.
    pub push_json: &'a Path,
    /// Where each line of output goes as soon as the hook writes it (the pusher's
    /// side-band), besides [`Verdict::output`].
    pub live: Option<&'a Notes>,
}

/// Lines for the pusher, sent while the push runs.
pub type Notes = tokio::sync::mpsc::UnboundedSender<String>;

/// The hook's answer: its output lines, and the refusal if it refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub output: Vec<String>,
    pub refusal: Option<String>,
}

/// The most output lines shown to the pusher, and the longest line.
const MAX_LINES: usize = 1000;
const MAX_LINE: usize = 4096;

impl PreReceive {
    /// Runs the hook on `input`.
    pub async fn run(&self, input: HookInput<'_>) -> Verdict {
        let mut command = tokio::process::Command::new(&self.path);
        command
            .env("GIT_DIR", input.git_dir)
            .env(
                "GIT_PUSH_OPTION_COUNT",
                input.push_options.len().to_string(),
            )
            .env("STOWAGE_REPO", input.repo)
            .env("STOWAGE_PUSH_JSON", input.push_json)
            .env_remove("GIT_OBJECT_DIRECTORY")
            .env_remove("GIT_ALTERNATE_OBJECT_DIRECTORIES")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        for (n, option) in input.push_options.iter().enumerate() {
            command.env(format!("GIT_PUSH_OPTION_{n}"), option);
        }
        match input.user {
            Some(user) => command.env("STOWAGE_USER", user),
            None => command.env_remove("STOWAGE_USER"),
        };
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(e) => {
                tracing::error!(hook = %self.path.display(), error = %e, "the pre-receive hook cannot start");
                return Verdict {
                    output: Vec::new(),
                    refusal: Some(format!("pre-receive hook could not start: {e}")),
                };
            }
        };
        let group = child.id();
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let lines: String = input.lines.iter().map(|l| format!("{l}\n")).collect();
        let run = async {
            // Input and output at once: a hook may write before it reads.
            let write = async move {
                if let Some(mut stdin) = stdin {
                    // A hook that does not read its input closes the pipe: not an error.
                    let _ = stdin.write_all(lines.as_bytes()).await;
                }
            };
            let live = input.live;
            let ((), out, err) =
                tokio::join!(write, read_lines(stdout, live), read_lines(stderr, live));
            let status = child.wait().await;
            (out, err, status)
        };
        let (mut output, refusal) = match tokio::time::timeout(self.timeout, run).await {
            Ok((out, err, status)) => {
                let mut output = out;
                output.extend(err);
                let refusal = match status {
                    Ok(status) if status.success() => None,
                    Ok(_) => Some("pre-receive hook declined".to_owned()),
                    Err(e) => Some(format!("pre-receive hook failed: {e}")),
                };
                (output, refusal)
            }
            Err(_) => {
                kill_group(group);
                let secs = self.timeout.as_secs();
                let refusal = format!("pre-receive hook timed out after {secs} s");
                (Vec::new(), Some(refusal))
            }
        };
        output.truncate(MAX_LINES);
        Verdict { output, refusal }
    }
}

/// The lines `pipe` gives until it closes, cut to the limits, each also sent to `live`.
async fn read_lines(
    pipe: Option<impl tokio::io::AsyncRead + Unpin>,
    live: Option<&Notes>,
) -> Vec<String> {
    let Some(pipe) = pipe else {
        return Vec::new();
    };
    let mut reader = BufReader::new(pipe);
    let mut lines = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return lines,
            Ok(_) => {
                if lines.len() < MAX_LINES {
                    line.truncate(MAX_LINE);
                    let text = String::from_utf8_lossy(&line);
                    let text = text.trim_end_matches(['\n', '\r']).to_owned();
                    if let Some(live) = live {
                        let _ = live.send(text.clone());
                    }
                    lines.push(text);
                }
            }
        }
    }
}

/// Kills the hook's process group (the hook and what it started).
fn kill_group(group: Option<u32>) {
    let Some(pid) = group.and_then(|id| rustix::process::Pid::from_raw(id as i32)) else {
        return;
    };
    let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
}

/// Readies what the hook reads of a push in `dir`: `git/`, a repository holding the
/// received pack (complete: its thin bases were added when it was indexed), with a
/// `shallow` file cutting history where the pushed commits meet the repository's, so
/// `git log <new>` lists them; and `push.json`, the commands with their new commits.
/// Returns the two paths.
pub fn prepare(
    dir: &Path,
    received: Option<(&super::odb::LocalPack, &gix_hash::ObjectId, &Path, &Path)>,
    repository: &dyn super::odb::ObjectSource,
    commands: &[(String, gix_hash::ObjectId, gix_hash::ObjectId)],
    repo: &str,
    user: Option<&str>,
) -> Result<(PathBuf, PathBuf), super::OdbError> {
    use super::odb::{DynSource, Layered, NoObjects, ObjectSource};
    let io = |e: std::io::Error| {
        super::OdbError::from(stowage_store::Error::from_io("hook directory", e))
    };
    let git_dir = dir.join("git");
    let pack_dir = git_dir.join("objects").join("pack");
    std::fs::create_dir_all(&pack_dir).map_err(io)?;
    std::fs::create_dir_all(git_dir.join("refs")).map_err(io)?;
    std::fs::write(git_dir.join("HEAD"), "ref: refs/heads/main\n").map_err(io)?;
    let none = NoObjects;
    let local: &dyn ObjectSource = match received {
        Some((local, hash, index, data)) => {
            for (from, name) in [(index, "idx"), (data, "pack")] {
                let to = pack_dir.join(format!("pack-{hash}.{name}"));
                if std::fs::hard_link(from, &to).is_err() {
                    std::fs::copy(from, &to).map_err(io)?;
                }
            }
            local
        }
        None => &none,
    };
    let (first, then) = (DynSource(local), DynSource(repository));
    let both = Layered {
        first: &first,
        then: &then,
    };
    let mut described = Vec::new();
    let mut boundary = std::collections::BTreeSet::new();
    for (name, old, new) in commands {
        let found = super::describe::new_commits(local, &both, *new, MAX_COMMITS, MAX_COUNTED)?;
        for commit in &found.commits {
            for parent in &commit.parents {
                let parent = gix_hash::ObjectId::from_hex(parent.as_bytes())
                    .expect("ids are written as hex");
                if !local.contains(&parent) {
                    boundary.insert(commit.id.clone());
                }
            }
        }
        described.push(serde_json::json!({
            "ref": name,
            "old": old.to_string(),
            "new": new.to_string(),
            "commits": found.commits,
        }));
    }
    let shallow: String = boundary.iter().map(|id| format!("{id}\n")).collect();
    if !shallow.is_empty() {
        std::fs::write(git_dir.join("shallow"), shallow).map_err(io)?;
    }
    let json = serde_json::json!({
        "repository": repo,
        "user": user,
        "commands": described,
    });
    let json_path = dir.join("push.json");
    std::fs::write(&json_path, json.to_string()).map_err(io)?;
    Ok((git_dir, json_path))
}

/// The most new commits described per command, and counted.
const MAX_COMMITS: usize = 1000;
const MAX_COUNTED: usize = 100_000;

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn hook(dir: &Path, script: &str) -> PreReceive {
        let path = dir.join("hook");
        std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        PreReceive {
            path,
            timeout: Duration::from_secs(5),
        }
    }

    fn input<'a>(dir: &'a Path, options: &'a [String]) -> HookInput<'a> {
        HookInput {
            lines: vec![format!(
                "{} {} refs/heads/main",
                "0".repeat(40),
                "1".repeat(40)
            )],
            push_options: options,
            repo: "org/app",
            user: Some("alice"),
            git_dir: dir,
            push_json: dir,
            live: None,
        }
    }

    #[tokio::test]
    async fn the_hook_sees_git_s_contract_and_its_exit_decides() {
        let dir = tempfile::tempdir().expect("dir");
        let options = vec!["ci.skip".to_owned(), "reviewer=bob".to_owned()];
        let accept = hook(
            dir.path(),
            "read old new name; echo \"$name $STOWAGE_REPO $STOWAGE_USER\"; \
             echo \"$GIT_PUSH_OPTION_COUNT $GIT_PUSH_OPTION_0 $GIT_PUSH_OPTION_1\" >&2",
        );
        let verdict = accept.run(input(dir.path(), &options)).await;
        assert_eq!(verdict.refusal, None);
        assert_eq!(
            verdict.output,
            ["refs/heads/main org/app alice", "2 ci.skip reviewer=bob"]
        );
        let refuse = hook(dir.path(), "echo 'no JIRA id'; exit 3");
        let verdict = refuse.run(input(dir.path(), &[])).await;
        assert_eq!(
            verdict.refusal.as_deref(),
            Some("pre-receive hook declined")
        );
        assert_eq!(verdict.output, ["no JIRA id"]);
    }

    #[tokio::test]
    async fn a_hook_past_its_time_or_that_cannot_start_refuses() {
        let dir = tempfile::tempdir().expect("dir");
        let mut slow = hook(dir.path(), "sleep 30 & sleep 30");
        slow.timeout = Duration::from_millis(300);
        let started = std::time::Instant::now();
        let verdict = slow.run(input(dir.path(), &[])).await;
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(
            verdict
                .refusal
                .as_deref()
                .is_some_and(|r| r.contains("timed out")),
            "{verdict:?}"
        );
        let missing = PreReceive {
            path: dir.path().join("no-such-hook"),
            timeout: Duration::from_secs(1),
        };
        let verdict = missing.run(input(dir.path(), &[])).await;
        assert!(
            verdict
                .refusal
                .as_deref()
                .is_some_and(|r| r.contains("could not start")),
            "{verdict:?}"
        );
    }
}
