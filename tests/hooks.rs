//! The pre-receive hook, driven by the real git client: git's contract, what the hook
//! can read of the push, and its time limit.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::{Backend, Sandbox, Server, stowage};

on_every_backend!(
    a_hook_refuses_commits_without_a_ticket,
    a_hook_past_its_time_refuses,
    a_hook_s_output_is_shown_while_it_runs
);

/// An executable shell script at `path`.
fn script(path: &Path, body: &str) {
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).expect("write hook");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// Packs the store lists for `repo`, by `stowage fsck`.
fn packs(backend: &Backend, repo: &str) -> String {
    let out = stowage()
        .args(["fsck", repo, "--store", &backend.url()])
        .output()
        .expect("stowage fsck");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.split(',').next().unwrap_or_default().to_owned()
}

/// A hook that runs `git log` in the directory it is given, refuses commits whose
/// message has no `JIRA-<n>`, and keeps what it was told for the test to read.
fn a_hook_refuses_commits_without_a_ticket(backend: Backend) {
    let sb = Sandbox::new();
    let seen = sb.path("seen");
    std::fs::create_dir_all(&seen).expect("dir");
    let hook = sb.path("pre-receive");
    script(
        &hook,
        &format!(
            r#"seen={seen}
env | grep -E '^(GIT_PUSH_OPTION|STOWAGE_USER|STOWAGE_REPO)' | sort > "$seen/env"
cp "$STOWAGE_PUSH_JSON" "$seen/push.json"
status=0
while read old new ref; do
  for c in $(git rev-list "$new"); do
    if ! git log -1 --format=%s "$c" | grep -qE 'JIRA-[0-9]+'; then
      echo "commit $c on $ref has no JIRA ticket in its message" >&2
      status=1
    fi
  done
done
exit $status"#,
            seen = seen.display()
        ),
    );
    let server = Server::start_with(
        &backend,
        &["--pre-receive-hook", hook.to_str().expect("utf-8")],
    );
    let url = server.url("hooked.git");
    let work = sb.init_repo("work");
    let first = sb.commit(&work, "a.txt", "one\n", "JIRA-1 the first file");
    sb.git(&work, &["push", "-q", &url, "main"]);
    let listed = packs(&backend, "hooked");

    sb.commit(&work, "b.txt", "two\n", "more things");
    let refused = sb.git_output(&work, &["push", &url, "main"]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(
        stderr.contains("remote: commit") && stderr.contains("has no JIRA ticket"),
        "git shows the hook's words: {stderr}"
    );
    assert!(stderr.contains("pre-receive hook declined"), "{stderr}");
    let remote = sb.git(&work, &["ls-remote", &url, "refs/heads/main"]);
    assert!(remote.starts_with(&first), "no ref moved: {remote}");
    assert_eq!(packs(&backend, "hooked"), listed, "nothing of it is listed");

    sb.git(
        &work,
        &["commit", "-q", "--amend", "-m", "JIRA-2 more things"],
    );
    let good = sb.git(&work, &["rev-parse", "HEAD"]);
    sb.git(
        &work,
        &[
            "push",
            "-q",
            "-o",
            "ci.skip",
            "-o",
            "reviewer=bob",
            &url,
            "main",
        ],
    );
    let remote = sb.git(&work, &["ls-remote", &url, "refs/heads/main"]);
    assert!(remote.starts_with(good.trim()), "{remote}");
    let env = std::fs::read_to_string(seen.join("env")).expect("env");
    for line in [
        "GIT_PUSH_OPTION_0=ci.skip",
        "GIT_PUSH_OPTION_1=reviewer=bob",
        "GIT_PUSH_OPTION_COUNT=2",
        "STOWAGE_REPO=hooked",
        "STOWAGE_USER=admin",
    ] {
        assert!(env.lines().any(|l| l == line), "{line} in {env}");
    }
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(seen.join("push.json")).expect("json"))
            .expect("the push as JSON");
    let command = &json["commands"][0];
    assert_eq!(command["ref"], "refs/heads/main");
    assert_eq!(command["old"], first.as_str());
    assert_eq!(command["new"], good.trim());
    let commits = command["commits"].as_array().expect("commits");
    assert_eq!(commits.len(), 1, "only the new commit: {json}");
    assert_eq!(commits[0]["message"], "JIRA-2 more things\n");
    assert_eq!(commits[0]["author"]["email"], "test@stowage.invalid");
    assert_eq!(
        commits[0]["added"],
        serde_json::json!([{ "path": "b.txt", "size": 4 }]),
        "{json}"
    );
}

/// A hook that runs past `--hook-timeout-secs` refuses the push.
fn a_hook_past_its_time_refuses(backend: Backend) {
    let sb = Sandbox::new();
    let hook = sb.path("slow");
    script(&hook, "sleep 30");
    let server = Server::start_with(
        &backend,
        &[
            "--pre-receive-hook",
            hook.to_str().expect("utf-8"),
            "--hook-timeout-secs",
            "1",
        ],
    );
    let url = server.url("slow-hook.git");
    let work = sb.init_repo("work");
    sb.commit(&work, "a.txt", "one\n", "first");
    let started = std::time::Instant::now();
    let out = sb.git_output(&work, &["push", &url, "main"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("pre-receive hook timed out after 1 s"),
        "{stderr}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    let listed = sb.git_output(&work, &["ls-remote", &url]);
    assert!(
        !listed.status.success() || listed.stdout.is_empty(),
        "no repository, no ref"
    );
}

/// A hook's lines reach the pusher as it writes them, not when the push ends: git
/// shows the first line while the hook is still at work.
fn a_hook_s_output_is_shown_while_it_runs(backend: Backend) {
    use std::io::BufRead;
    let sb = Sandbox::new();
    let hook = sb.path("chatty");
    script(
        &hook,
        "echo 'checking the commits'; sleep 3; echo 'all good' >&2",
    );
    let server = Server::start_with(
        &backend,
        &["--pre-receive-hook", hook.to_str().expect("utf-8")],
    );
    let url = server.url("chatty.git");
    let work = sb.init_repo("work");
    sb.commit(&work, "a.txt", "one\n", "first");
    let started = std::time::Instant::now();
    let mut push = sb
        .git_cmd(&work)
        .args(["push", "--progress", &url, "main"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("git push");
    let mut lines = Vec::new();
    for line in std::io::BufReader::new(push.stderr.take().expect("stderr")).lines() {
        let line = line.expect("a line");
        lines.push((started.elapsed(), line));
    }
    assert!(push.wait().expect("git push").success(), "{lines:?}");
    let at = |text: &str| {
        lines
            .iter()
            .find(|(_, l)| l.contains(text))
            .map(|(t, _)| *t)
            .unwrap_or_else(|| panic!("{text:?} in {lines:?}"))
    };
    let (first, last) = (at("remote: checking the commits"), at("remote: all good"));
    assert!(
        last - first >= std::time::Duration::from_secs(2),
        "the first line came {first:?} after the start, the second {last:?}: {lines:?}"
    );
}
