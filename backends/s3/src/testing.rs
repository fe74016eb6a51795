//! Support for tests that run against a real S3-compatible service (LocalStack in this
//! repository's test command).
//!
//! The endpoint is `AWS_ENDPOINT_URL` (default `http://127.0.0.1:4566`); credentials
//! are `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY` (default `test`/`test`), region
//! `AWS_REGION` (default `us-east-1`). Tests never pass silently without S3: when the
//! service is unreachable a test is skipped with a message on stderr, and when `CI` or
//! `STOWAGE_REQUIRE_S3=1` is set it fails instead.

use std::io::Write;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};

use crate::{Location, S3Store, wants_path_style};

/// The endpoint tests use.
pub fn endpoint() -> String {
    std::env::var("AWS_ENDPOINT_URL").unwrap_or_else(|_| "http://127.0.0.1:4566".to_owned())
}

/// Whether the environment demands that S3 tests run (CI, or `STOWAGE_REQUIRE_S3=1`).
pub fn s3_required() -> bool {
    let set =
        |name: &str| std::env::var(name).is_ok_and(|v| !v.is_empty() && v != "0" && v != "false");
    set("CI") || set("STOWAGE_REQUIRE_S3")
}

/// A client for the test endpoint.
pub fn client() -> Client {
    let endpoint = endpoint();
    let env =
        |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_owned());
    let config = aws_sdk_s3::config::Builder::new()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(env("AWS_REGION", "us-east-1")))
        .endpoint_url(&endpoint)
        .force_path_style(wants_path_style(
            Some(&endpoint),
            std::env::var("AWS_S3_FORCE_PATH_STYLE").ok().as_deref(),
        ))
        .credentials_provider(Credentials::new(
            env("AWS_ACCESS_KEY_ID", "test"),
            env("AWS_SECRET_ACCESS_KEY", "test"),
            None,
            None,
            "stowage-tests",
        ))
        // As in production: no SDK retries (stowage's retry layer retries), and the
        // same time limits.
        .retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled())
        .timeout_config(crate::timeouts())
        .build();
    Client::from_conf(config)
}

/// A new, empty bucket name for one test.
pub fn unique_bucket() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "stowage-test-{}-{}-{}",
        std::process::id(),
        nanos % 1_000_000_000_000,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A store in a bucket of its own, or `None` (after saying why on stderr) when S3 is
/// unreachable and not required. Panics when S3 is required but unreachable.
pub async fn fresh_store() -> Option<S3Store> {
    let client = client();
    let bucket = unique_bucket();
    match client.create_bucket().bucket(&bucket).send().await {
        Ok(_) => Some(S3Store::new(
            client,
            Location {
                bucket,
                prefix: String::new(),
            },
        )),
        Err(e) => {
            let why = format!(
                "S3 at {} is not usable: {}",
                endpoint(),
                aws_sdk_s3::error::DisplayErrorContext(&e)
            );
            if s3_required() {
                panic!("{why} (S3 is required here: CI or STOWAGE_REQUIRE_S3 is set)");
            }
            // Straight to the process's stderr: the test harness captures `eprintln!`,
            // and a skip must be seen.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: {why}; start it with localstack/start.sh"
            );
            None
        }
    }
}
