//! Harness for end-to-end tests: starts `stowage serve` on a backend and drives the
//! real `git` binary against it, with an isolated HOME and no system or global config.

#![allow(dead_code)] // each test binary uses a different part of the harness

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;

/// Where a test's repositories live.
#[derive(Debug, Clone)]
pub enum Backend {
    Fs(Arc<tempfile::TempDir>),
    S3 { bucket: String },
}

impl Backend {
    pub fn fs() -> Backend {
        Backend::Fs(Arc::new(tempfile::tempdir().expect("temp dir")))
    }

    /// A fresh bucket on the test S3 service, or `None` when S3 is unreachable and not
    /// required (the harness says so on stderr); panics when it is required.
    pub fn s3() -> Option<Backend> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let store = runtime.block_on(stowage_s3::testing::fresh_store())?;
        Some(Backend::S3 {
            bucket: store.location().bucket.clone(),
        })
    }

    pub fn url(&self) -> String {
        match self {
            Backend::Fs(dir) => format!("file://{}", dir.path().display()),
            Backend::S3 { bucket } => format!("s3://{bucket}"),
        }
    }
}

/// Environment for stowage processes talking to the test S3 service.
fn s3_env(cmd: &mut Command) {
    let env = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.into());
    cmd.env("AWS_ENDPOINT_URL", stowage_s3::testing::endpoint())
        .env("AWS_ACCESS_KEY_ID", env("AWS_ACCESS_KEY_ID", "test"))
        .env(
            "AWS_SECRET_ACCESS_KEY",
            env("AWS_SECRET_ACCESS_KEY", "test"),
        )
        .env("AWS_REGION", env("AWS_REGION", "us-east-1"))
        .env("AWS_EC2_METADATA_DISABLED", "true");
}

/// The `stowage` binary under test.
pub fn stowage() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_stowage"));
    s3_env(&mut cmd);
    cmd
}

/// Reads what a starting server prints up to its address: the base URL it listens on,
/// and the lines before it.
pub fn until_listening(child: &mut Child) -> (String, String) {
    let stdout = child.stdout.take().expect("stdout");
    let mut reader = BufReader::new(stdout);
    let mut banner = String::new();
    loop {
        let mut line = String::new();
        let n = reader.read_line(&mut line).expect("stowage prints");
        assert!(
            n > 0,
            "stowage ended before its address; it printed:\n{banner}"
        );
        if let Some(base) = line.trim().strip_prefix("listening on ") {
            return (base.to_owned(), banner);
        }
        banner.push_str(&line);
    }
}

/// The token of each store's first server admin, by store URL: printed once by the
/// first server started on the store.
static ADMIN_TOKENS: std::sync::Mutex<Vec<(String, String)>> = std::sync::Mutex::new(Vec::new());

/// The first admin's token for `backend`: a server started on it printed it (another
/// one starting at the same time may be about to).
pub fn admin_token(backend: &Backend) -> String {
    let url = backend.url();
    for _ in 0..200 {
        let found = ADMIN_TOKENS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|(u, _)| *u == url)
            .map(|(_, t)| t.clone());
        if let Some(token) = found {
            return token;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("no admin token is known for {url}")
}

/// Runs `stowage ARGS --store <backend>`; returns stdout, panics on failure.
pub fn cli(backend: &Backend, args: &[&str]) -> String {
    let out = cli_output(backend, args);
    assert!(
        out.status.success(),
        "stowage {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn cli_output(backend: &Backend, args: &[&str]) -> std::process::Output {
    stowage()
        .args(args)
        .args(["--store", &backend.url()])
        .output()
        .expect("stowage runs")
}

/// A user with one token, and `role` on `target` if given.
pub fn user(backend: &Backend, name: &str, grant: Option<(&str, &str)>) -> String {
    cli(backend, &["user", "add", name]);
    if let Some((target, role)) = grant {
        cli(backend, &["repo", "grant", target, name, role]);
    }
    cli(backend, &["token", "create", name]).trim().to_owned()
}

/// A running server; stopped (by its PID) when dropped.
#[derive(Debug)]
pub struct Server {
    child: Child,
    /// The server's base URL with the admin token as credentials (without them when
    /// access control is off).
    pub base: String,
    /// The base URL without credentials.
    pub anon_base: String,
    /// What the server printed before its address.
    pub banner: String,
}

impl Server {
    pub fn start(backend: &Backend) -> Server {
        Self::start_with(backend, &[])
    }

    pub fn start_with(backend: &Backend, extra: &[&str]) -> Server {
        Self::start_at(backend, "127.0.0.1:0", extra)
    }

    /// A server listening on `listen` (an address and port).
    pub fn start_at(backend: &Backend, listen: &str, extra: &[&str]) -> Server {
        let mut child = stowage()
            .args(["serve", "--listen", listen, "--store", &backend.url()])
            .args(extra)
            .env("RUST_LOG", "stowage=warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("stowage starts");
        let (anon_base, banner) = until_listening(&mut child);
        for line in banner.lines() {
            let trimmed = line.trim();
            if trimmed.starts_with("stw_") {
                ADMIN_TOKENS
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((backend.url(), trimmed.to_owned()));
            }
        }
        let base = if extra.contains(&"--no-auth") {
            anon_base.clone()
        } else {
            let token = admin_token(backend);
            anon_base.replacen("://", &format!("://admin:{token}@"), 1)
        };
        Server {
            child,
            base,
            anon_base,
            banner,
        }
    }

    /// The URL of `repo` (or any path), with the admin's credentials.
    pub fn url(&self, repo: &str) -> String {
        format!("{}/{repo}", self.base)
    }

    /// The URL of `repo` without credentials.
    pub fn anon_url(&self, repo: &str) -> String {
        format!("{}/{repo}", self.anon_base)
    }

    /// The URL of `repo` with `token` as the password of `user`.
    pub fn url_as(&self, user: &str, token: &str, repo: &str) -> String {
        let base = self
            .anon_base
            .replacen("://", &format!("://{user}:{token}@"), 1);
        format!("{base}/{repo}")
    }
}

impl Server {
    /// Sends SIGTERM, as an orchestrator stopping the server does.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    /// Waits at most `within` for the server to end; its exit status, if it ended.
    pub fn wait_exit(&mut self, within: std::time::Duration) -> Option<std::process::ExitStatus> {
        let until = std::time::Instant::now() + within;
        while std::time::Instant::now() < until {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        None
    }

    /// Kills the server with SIGKILL, as a crash would, and waits for it to end.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A scratch area with an isolated git configuration.
#[derive(Debug)]
pub struct Sandbox {
    pub dir: tempfile::TempDir,
    /// The global git configuration (`/dev/null` unless git-lfs is set up).
    global: PathBuf,
}

impl Default for Sandbox {
    fn default() -> Self {
        Self::new()
    }
}

impl Sandbox {
    pub fn new() -> Sandbox {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir_all(dir.path().join("home")).expect("home");
        Sandbox {
            dir,
            global: PathBuf::from("/dev/null"),
        }
    }

    /// A sandbox whose git runs the git-lfs filters and hooks: `git lfs install` into
    /// the sandbox's own global configuration. git-lfs must be on PATH
    /// (`scripts/test.sh` puts it there).
    pub fn with_lfs() -> Sandbox {
        let mut sandbox = Sandbox::new();
        let found = Command::new("git-lfs").arg("version").output();
        assert!(
            found.is_ok_and(|o| o.status.success()),
            "git-lfs is not on PATH: run the tests with scripts/test.sh, which installs it"
        );
        sandbox.global = sandbox.path("home/.gitconfig");
        std::fs::write(&sandbox.global, "").expect("global config");
        let home = sandbox.path("home");
        sandbox.git(&home, &["lfs", "install", "--skip-repo"]);
        sandbox
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The client `git` in `cwd` with no user or system configuration.
    pub fn git_cmd(&self, cwd: &Path) -> Command {
        let mut cmd = Command::new(git_binary());
        cmd.current_dir(cwd)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.dir.path().join("home"))
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", &self.global)
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_AUTHOR_NAME", "Stowage Test")
            .env("GIT_AUTHOR_EMAIL", "test@stowage.invalid")
            .env("GIT_COMMITTER_NAME", "Stowage Test")
            .env("GIT_COMMITTER_EMAIL", "test@stowage.invalid")
            .args([
                "-c",
                "init.defaultBranch=main",
                "-c",
                "advice.detachedHead=false",
            ]);
        cmd
    }

    /// Runs git; panics with its output if it fails.
    pub fn git(&self, cwd: &Path, args: &[&str]) -> String {
        let out = self.git_output(cwd, args);
        assert!(
            out.status.success(),
            "git {args:?} failed in {}:\n{}{}",
            cwd.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn git_output(&self, cwd: &Path, args: &[&str]) -> Output {
        self.git_cmd(cwd).args(args).output().expect("git runs")
    }

    /// A new repository at `name` with `commits` commits on main.
    pub fn init_repo(&self, name: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::create_dir_all(&path).expect("dir");
        self.git(&path, &["init", "-q"]);
        path
    }

    /// Commits a change to `file` with `message`.
    pub fn commit(&self, repo: &Path, file: &str, content: &str, message: &str) -> String {
        let path = repo.join(file);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("dir");
        }
        std::fs::write(&path, content).expect("write");
        self.git(repo, &["add", "-A"]);
        self.git(repo, &["commit", "-q", "-m", message]);
        self.git(repo, &["rev-parse", "HEAD"]).trim().to_owned()
    }
}

/// The git client the tests drive: `STOWAGE_TEST_GIT` (a path), else `git` on PATH.
/// The reference server of the conformance suite stays PATH's git.
pub fn git_binary() -> String {
    std::env::var("STOWAGE_TEST_GIT").unwrap_or_else(|_| "git".to_owned())
}

/// The version of `git` (a name on PATH or a path), as `git --version` prints it.
pub fn git_version_of(git: &str) -> String {
    let out = Command::new(git)
        .arg("--version")
        .output()
        .expect("git --version");
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim().trim_start_matches("git version ").to_owned()
}

/// The client's (major, minor) version, for what older clients do not do.
#[allow(dead_code)]
pub fn client_version() -> (u32, u32) {
    let version = git_version_of(&git_binary());
    let mut parts = version.split('.').map(|p| p.parse().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

/// Every object reachable from every ref of `repo`, sorted.
pub fn all_objects(sandbox: &Sandbox, repo: &Path) -> Vec<String> {
    let mut ids: Vec<String> = sandbox
        .git(repo, &["rev-list", "--all", "--objects"])
        .lines()
        .map(|l| l.split(' ').next().unwrap_or("").to_owned())
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

/// Runs `scenario` on the filesystem backend.
pub fn on_fs(scenario: impl FnOnce(Backend)) {
    scenario(Backend::fs());
}

/// Runs `scenario` on S3, or reports the skip (see [`Backend::s3`]).
pub fn on_s3(scenario: impl FnOnce(Backend)) {
    if let Some(backend) = Backend::s3() {
        scenario(backend);
    }
}

/// Declares one test per backend for each scenario function.
#[macro_export]
macro_rules! on_every_backend {
    ($($scenario:ident),* $(,)?) => {
        mod fs {
            $(
                #[test]
                fn $scenario() {
                    $crate::common::on_fs(super::$scenario);
                }
            )*
        }
        mod s3 {
            $(
                #[test]
                fn $scenario() {
                    $crate::common::on_s3(super::$scenario);
                }
            )*
        }
    };
}

/// A number from the server's `GET /-/stats`.
pub fn stat(server: &Server, name: &str) -> u64 {
    let (status, body) = get(&server.url("-/stats"));
    assert_eq!(status, 200);
    let stats: serde_json::Value = serde_json::from_slice(&body).expect("stats are JSON");
    stats[name]
        .as_u64()
        .unwrap_or_else(|| panic!("{name} in {stats}"))
}

/// POSTs `body` to `url` with curl; returns (HTTP status, response body).
pub fn post(url: &str, content_type: &str, body: &[u8]) -> (u16, Vec<u8>) {
    post_with(url, content_type, body, &[])
}

/// [`post`] with extra request headers.
pub fn post_with(url: &str, content_type: &str, body: &[u8], headers: &[&str]) -> (u16, Vec<u8>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let input = dir.path().join("body");
    std::fs::write(&input, body).expect("write body");
    let out = Command::new("curl")
        .args(["-sS", "-o", "-", "-w", "\n%{http_code}", "-X", "POST"])
        .args(["-H", &format!("Content-Type: {content_type}")])
        .args(headers.iter().flat_map(|h| ["-H", h]))
        .arg("--data-binary")
        .arg(format!("@{}", input.display()))
        .arg(url)
        .output()
        .expect("curl runs");
    parse_curl(out)
}

/// GETs `url` with curl; returns (HTTP status, response body).
pub fn get(url: &str) -> (u16, Vec<u8>) {
    get_with(url, &[])
}

/// [`get`] with extra request headers.
pub fn get_with(url: &str, headers: &[&str]) -> (u16, Vec<u8>) {
    let out = Command::new("curl")
        .args(["-sS", "-o", "-", "-w", "\n%{http_code}", "--path-as-is"])
        .args(headers.iter().flat_map(|h| ["-H", h]))
        .arg(url)
        .output()
        .expect("curl runs");
    parse_curl(out)
}

fn parse_curl(out: Output) -> (u16, Vec<u8>) {
    let text = out.stdout;
    let split = text.iter().rposition(|b| *b == b'\n').expect("status line");
    let status = String::from_utf8_lossy(&text[split + 1..])
        .trim()
        .parse()
        .expect("status code");
    (status, text[..split].to_vec())
}

/// `len` bytes that do not compress (xorshift from `seed`).
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

/// A pkt-line.
pub fn pkt(data: &[u8]) -> Vec<u8> {
    let mut out = format!("{:04x}", data.len() + 4).into_bytes();
    out.extend_from_slice(data);
    out
}

/// A pack of the given objects, made by git.
pub fn pack_of(sb: &Sandbox, repo: &Path, ids: &[&str]) -> Vec<u8> {
    let mut child = sb
        .git_cmd(repo)
        .args(["pack-objects", "--stdout"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("pack-objects");
    let input: String = ids.iter().map(|id| format!("{id}\n")).collect();
    std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), input.as_bytes())
        .expect("write ids");
    let out = child.wait_with_output().expect("pack-objects ends");
    assert!(out.status.success());
    out.stdout
}

/// A receive-pack request body: one command, then the pack.
pub fn push_body(old: &str, new: &str, name: &str, pack: &[u8]) -> Vec<u8> {
    let mut body = pkt(format!("{old} {new} {name}\0report-status side-band-64k\n").as_bytes());
    body.extend_from_slice(b"0000");
    body.extend_from_slice(pack);
    body
}

/// `text` in base64, for a Basic `Authorization` header.
pub fn base64_basic(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}
