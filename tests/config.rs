//! The settings file (`stowage.toml`) and `stowage config`, through the real binary: a
//! file sets what flags set, flags and environment variables outrank it, a typo stops
//! the start, and `stowage config` shows where each value came from, secrets masked.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

/// A settings file in a directory of its own.
struct Settings {
    dir: tempfile::TempDir,
    path: PathBuf,
}

fn settings(text: &str) -> Settings {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("stowage.toml");
    std::fs::write(&path, text).expect("write settings");
    Settings { dir, path }
}

fn file_url(dir: &Path) -> String {
    format!("file://{}", dir.display())
}

/// `stowage` with none of its own variables taken from the tests' environment.
fn stowage() -> Command {
    let mut cmd = common::stowage();
    for name in ["STOWAGE_CONFIG", "STOWAGE_STORE", "STOWAGE_TMP_DIR"] {
        cmd.env_remove(name);
    }
    cmd.env("RUST_LOG", "stowage=warn");
    cmd
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("stowage runs")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `stowage config ARGS`, which must succeed; what it printed.
fn config(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(out.status.success(), "stowage config: {}", stderr(&out));
    stdout(&out)
}

/// Whether `text` has the line `line`.
fn has_line(text: &str, line: &str) -> bool {
    text.lines().any(|l| l == line)
}

/// A server that `cmd` started; killed (by its PID) when dropped.
struct Running {
    child: Child,
    base: String,
    banner: String,
}

impl Running {
    fn start(cmd: &mut Command) -> Running {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("stowage starts");
        let (base, banner) = common::until_listening(&mut child);
        Running {
            child,
            base,
            banner,
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The status of `GET /-/health` with a 2 KiB header.
fn health_with_big_header(server: &Running) -> u16 {
    let header = format!("X-Padding: {}", "p".repeat(2048));
    common::get_with(&format!("{}/-/health", server.base), &[&header]).0
}

/// What an anonymous client gets for a repository's refs.
fn anonymous_refs(server: &Running) -> u16 {
    let url = format!("{}/demo.git/info/refs?service=git-upload-pack", server.base);
    common::get(&url).0
}

#[test]
fn a_file_sets_what_flags_set() {
    let store = tempfile::tempdir().expect("temp dir");
    let file = settings(&format!(
        "# both spellings of a key work\nno_auth = true\nmax-header-kb = 1\n\
         store = \"{}\"\nlisten = \"127.0.0.1:0\"\n",
        file_url(store.path())
    ));
    let server = Running::start(stowage().arg("serve").arg("--config").arg(&file.path));
    assert!(
        server.banner.contains("access control is off"),
        "{}",
        server.banner
    );
    // No credentials are asked for, and a request head over 1 KiB is refused.
    assert_eq!(anonymous_refs(&server), 404);
    assert_eq!(health_with_big_header(&server), 431);
    let shown = config(stowage().arg("config").arg("--config").arg(&file.path));
    for line in [
        "no-auth = true  # file",
        "max-header-kb = 1  # file",
        "listen = \"127.0.0.1:0\"  # file",
        "max-request-mb = 64  # default",
        &format!("store = \"{}\"  # file", file_url(store.path())),
        &format!("# Settings file: {} (flag)", file.path.display()),
    ] {
        assert!(has_line(&shown, line), "{line:?} in\n{shown}");
    }
    // The same server without the file asks for credentials and takes the header.
    drop(server);
    let server = Running::start(
        stowage()
            .args(["serve", "--listen", "127.0.0.1:0", "--store"])
            .arg(file_url(store.path())),
    );
    assert_eq!(anonymous_refs(&server), 401);
    assert_eq!(health_with_big_header(&server), 200);
}

#[test]
fn a_flag_outranks_the_file() {
    let store = tempfile::tempdir().expect("temp dir");
    let file = settings(&format!(
        "no-auth = true\nmax-header-kb = 1\nstore = \"{}\"\n",
        file_url(store.path())
    ));
    let args = ["--listen", "127.0.0.1:0", "--max-header-kb", "64"];
    let server = Running::start(
        stowage()
            .arg("serve")
            .arg("--config")
            .arg(&file.path)
            .args(args),
    );
    assert_eq!(health_with_big_header(&server), 200);
    assert_eq!(anonymous_refs(&server), 404, "the file's no-auth holds");
    let shown = config(
        stowage()
            .arg("config")
            .arg("--config")
            .arg(&file.path)
            .args(args),
    );
    assert!(
        has_line(&shown, "max-header-kb = 64  # flag, over the file's"),
        "{shown}"
    );
    assert!(
        has_line(&shown, "listen = \"127.0.0.1:0\"  # flag"),
        "{shown}"
    );
    assert!(has_line(&shown, "no-auth = true  # file"), "{shown}");
}

#[test]
fn an_environment_variable_outranks_the_file() {
    let from_file = tempfile::tempdir().expect("temp dir");
    let from_env = tempfile::tempdir().expect("temp dir");
    let file = settings(&format!(
        "store = \"{}\"\nlisten = \"127.0.0.1:0\"\n",
        file_url(&from_file.path().join("store"))
    ));
    let env_store = from_env.path().join("store");
    // The file named by STOWAGE_CONFIG; the store by STOWAGE_STORE.
    let server = Running::start(
        stowage()
            .arg("serve")
            .env("STOWAGE_CONFIG", &file.path)
            .env("STOWAGE_STORE", file_url(&env_store)),
    );
    assert!(
        server.banner.contains("stw_"),
        "a new store: {}",
        server.banner
    );
    // The first start wrote the first admin into the store the variable names.
    assert!(env_store.join(".access").exists());
    assert!(!from_file.path().join("store").exists());
    drop(server);
    let shown = config(
        stowage()
            .arg("config")
            .env("STOWAGE_CONFIG", &file.path)
            .env("STOWAGE_STORE", file_url(&env_store)),
    );
    let line = format!(
        "store = \"{}\"  # env STOWAGE_STORE, over the file's",
        file_url(&env_store)
    );
    assert!(has_line(&shown, &line), "{line:?} in\n{shown}");
    assert!(
        has_line(
            &shown,
            &format!(
                "# Settings file: {} (env STOWAGE_CONFIG)",
                file.path.display()
            )
        ),
        "{shown}"
    );
    // A flag outranks the variable.
    let shown = config(
        stowage()
            .args(["config", "--store", "memory://"])
            .env("STOWAGE_CONFIG", &file.path)
            .env("STOWAGE_STORE", file_url(&env_store)),
    );
    assert!(
        has_line(&shown, "store = \"memory://\"  # flag, over the file's"),
        "{shown}"
    );
}

/// `stowage COMMAND --config FILE` for a file holding `text`: it must fail, without
/// starting; what it said.
fn refused(command: &str, text: &str) -> (Settings, String) {
    let store = tempfile::tempdir().expect("temp dir");
    let file = settings(text);
    let out = run(stowage()
        .args([command, "--listen", "127.0.0.1:0", "--store"])
        .arg(file_url(store.path()))
        .arg("--config")
        .arg(&file.path));
    assert!(!out.status.success(), "{command} with {text:?} started");
    assert!(!stdout(&out).contains("listening on"), "{}", stdout(&out));
    assert!(
        std::fs::read_dir(store.path())
            .expect("store dir")
            .next()
            .is_none(),
        "{command} with {text:?} wrote to the store"
    );
    (file, stderr(&out))
}

#[test]
fn an_unknown_key_stops_the_start_naming_it() {
    for command in ["serve", "config"] {
        let (file, said) = refused(command, "no-auth = true\nmax-reqest-mb = 1\n");
        let expected = format!(
            "{}:2: unknown setting `max-reqest-mb` (did you mean `max-request-mb`?)",
            file.path.display()
        );
        assert!(said.contains(&expected), "{command}: {said}");
    }
}

#[test]
fn a_wrong_type_or_a_bad_value_stops_the_start_naming_the_key() {
    for (text, expected) in [
        (
            "max-request-mb = \"64\"\n",
            ":1: `max-request-mb`: must be an integer, not a string",
        ),
        (
            "\nno-auth = 1\n",
            ":2: `no-auth`: must be true or false, not an integer",
        ),
        (
            "fsck-ignore = [1]\n",
            ":1: `fsck-ignore`: in the list: must be a string",
        ),
        (
            "max-depth = -1\n",
            ":1: `max-depth`: invalid value '-1' for '--max-depth <MAX_DEPTH>'",
        ),
        (
            "log-format = \"xml\"\n",
            ":1: `log-format`: invalid value 'xml'",
        ),
        (
            "no-auth = true\nno-auth = false\n",
            "TOML parse error at line 2",
        ),
        // `refused` gives --listen too: a bad value is an error even where outranked.
        (
            "listen = \"nowhere\"\n",
            ":1: `listen`: invalid value 'nowhere'",
        ),
    ] {
        let (file, said) = refused("serve", text);
        let expected = if expected.starts_with(':') {
            format!("{}{expected}", file.path.display())
        } else {
            expected.to_owned()
        };
        assert!(said.contains(&expected), "{text:?}: {said}");
    }
    // Where the file's is the one in force.
    let file = settings("listen = \"nowhere\"\n");
    let out = run(stowage().args(["config", "--config"]).arg(&file.path));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(&format!(
            "{}:1: `listen`: invalid value 'nowhere' for '--listen <LISTEN>'",
            file.path.display()
        )),
        "{}",
        stderr(&out)
    );
    // A file that is not there.
    let out = run(stowage().args(["serve", "--config", "/nonexistent/stowage.toml"]));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("cannot read the settings file /nonexistent/stowage.toml"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn config_masks_secrets_and_reads_no_store() {
    let never = tempfile::tempdir().expect("temp dir");
    let untouched = never.path().join("store");
    let file = settings(
        "store = \"s3://AKIDFILEEXAMPLE:wJalrFileSecret@bucket/prefix\"\n\
         public-url = \"https://bob:hunter2@git.example.com\"\n",
    );
    let shown = config(
        stowage()
            .arg("config")
            .arg("--config")
            .arg(&file.path)
            .env("AWS_SECRET_ACCESS_KEY", "wJalrEnvSecret")
            .env("AWS_SESSION_TOKEN", "FwoGZXIvYXdzEnvToken")
            .env("AWS_REGION", "eu-west-1"),
    );
    for secret in [
        "AKIDFILEEXAMPLE",
        "wJalrFileSecret",
        "hunter2",
        "bob",
        "wJalrEnvSecret",
        "FwoGZXIvYXdzEnvToken",
    ] {
        assert!(!shown.contains(secret), "{secret} in\n{shown}");
    }
    for line in [
        "store = \"s3://********@bucket/prefix\"  # file; masked",
        "public-url = \"https://********@git.example.com\"  # file; masked",
        "# AWS_SECRET_ACCESS_KEY=\"********\"",
        "# AWS_SESSION_TOKEN=\"********\"",
        "# AWS_REGION=\"eu-west-1\"",
    ] {
        assert!(has_line(&shown, line), "{line:?} in\n{shown}");
    }
    // Neither an S3 store nor a filesystem store is opened.
    let shown = config(
        stowage()
            .args(["config", "--store"])
            .arg(file_url(&untouched)),
    );
    assert!(shown.contains(&file_url(&untouched)), "{shown}");
    assert!(!untouched.exists(), "stowage config made the store");
    drop(file.dir);
}

#[test]
fn what_config_prints_is_a_settings_file_for_the_same_server() {
    let store = tempfile::tempdir().expect("temp dir");
    let shown = config(
        stowage()
            .args(["config", "--no-auth", "--max-header-kb", "1"])
            .args([
                "--fsck-ignore",
                "zeroPaddedFilemode",
                "--listen",
                "127.0.0.1:0",
            ])
            .arg("--store")
            .arg(file_url(store.path())),
    );
    let file = settings(&shown);
    let again = config(stowage().arg("config").arg("--config").arg(&file.path));
    let values = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .map(|l| l.split("  #").next().unwrap_or(l).to_owned())
            .collect()
    };
    assert_eq!(values(&shown), values(&again));
    assert!(values(&again).len() > 40, "{again}");
    assert!(
        again
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .all(|l| l.ends_with("  # file")),
        "{again}"
    );
    let server = Running::start(stowage().arg("serve").arg("--config").arg(&file.path));
    assert_eq!(anonymous_refs(&server), 404);
    assert_eq!(health_with_big_header(&server), 431);
}
