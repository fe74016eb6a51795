//! [`FaultStore`]: an [`ObjectStore`] layer that fails chosen requests, to show what the
//! layers above do when the store fails. A test tool: `stowage serve --inject-faults
//! SPEC` puts one under the server.
//!
//! A spec is rules separated by `;`, each a list of `name=value` fields separated by
//! `,`:
//!
//! - `op=`: the requests it applies to, `|`-separated: `get`, `get_range`, `head`,
//!   `put`, `put_stream`, `delete`, `list`, or `read` (the first three), `write` (the
//!   next three), `any` (the default);
//! - `key=`: a pattern for the key, `*` matching any run of characters (default `*`);
//! - when it fires, counting only the requests it applies to: `nth=N` (the Nth, once),
//!   `after=N` (every one after the first N), `p=0.1` (each with that probability,
//!   drawn from `seed=N`); `times=N` bounds how often it fires in all;
//! - `error=`: `transient` (an injected 503, the default), `timeout`, `reset` (a
//!   connection reset), `permanent`, `crash` (the process aborts before the request is
//!   sent) or `crash-after` (the request is carried out, then the process aborts before
//!   it hears the answer).
//!
//! For example `op=put,key=*/manifest,nth=1,error=crash-after` aborts right after the
//! first manifest write, and `p=0.05,error=transient` fails one request in twenty.

use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt};

use crate::{
    ByteRange, ByteStream, ETag, Error, GetResult, Key, ObjectMeta, ObjectStore, PutMode, Result,
};

/// The kinds of request a rule can apply to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Get,
    GetRange,
    Head,
    Put,
    PutStream,
    Delete,
    List,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Get => "get",
            Op::GetRange => "get_range",
            Op::Head => "head",
            Op::Put => "put",
            Op::PutStream => "put_stream",
            Op::Delete => "delete",
            Op::List => "list",
        }
    }
}

/// What a firing rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// An answer like S3's 503: [`Error::Transient`].
    Transient,
    /// A request that timed out: [`Error::Transient`].
    Timeout,
    /// A connection reset: [`Error::Transient`].
    Reset,
    /// A fault that stays: [`Error::Other`].
    Permanent,
    /// The process aborts before the request is sent.
    Crash,
    /// The request is carried out, then the process aborts before it hears the answer.
    CrashAfter,
}

/// When a rule fires, among the requests it applies to.
#[derive(Debug, Clone, Copy, PartialEq)]
enum When {
    Nth(u64),
    After(u64),
    Probability(f64),
}

/// One rule of a spec.
#[derive(Debug)]
struct Rule {
    ops: Vec<Op>,
    key: String,
    when: When,
    times: Option<u64>,
    fault: Fault,
    /// Requests this rule applied to so far.
    seen: AtomicU64,
    /// Times it fired.
    fired: AtomicU64,
    /// State of the random draws for `p=`.
    random: Mutex<u64>,
}

/// Why a spec was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid fault spec {spec:?}: {reason}")]
pub struct SpecError {
    pub spec: String,
    pub reason: String,
}

fn parse_ops(value: &str) -> Option<Vec<Op>> {
    let mut ops = Vec::new();
    for name in value.split('|') {
        match name {
            "get" => ops.push(Op::Get),
            "get_range" => ops.push(Op::GetRange),
            "head" => ops.push(Op::Head),
            "put" => ops.push(Op::Put),
            "put_stream" => ops.push(Op::PutStream),
            "delete" => ops.push(Op::Delete),
            "list" => ops.push(Op::List),
            "read" => ops.extend([Op::Get, Op::GetRange, Op::Head]),
            "write" => ops.extend([Op::Put, Op::PutStream, Op::Delete]),
            "any" => ops.extend([
                Op::Get,
                Op::GetRange,
                Op::Head,
                Op::Put,
                Op::PutStream,
                Op::Delete,
                Op::List,
            ]),
            _ => return None,
        }
    }
    Some(ops)
}

fn parse_rule(text: &str) -> Result<Rule, String> {
    let mut ops = parse_ops("any").expect("a valid default");
    let mut key = "*".to_owned();
    let mut when = None;
    let mut times = None;
    let mut fault = Fault::Transient;
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for field in text.split(',').map(str::trim).filter(|f| !f.is_empty()) {
        let (name, value) = field
            .split_once('=')
            .ok_or_else(|| format!("{field:?} is not name=value"))?;
        let number = || {
            value
                .parse::<u64>()
                .map_err(|_| format!("{name}= needs a whole number, not {value:?}"))
        };
        match name {
            "op" => ops = parse_ops(value).ok_or_else(|| format!("unknown op in {value:?}"))?,
            "key" => key = value.to_owned(),
            "nth" => when = Some(When::Nth(number()?.max(1))),
            "after" => when = Some(When::After(number()?)),
            "p" => {
                let p: f64 = value
                    .parse()
                    .map_err(|_| format!("p= needs a probability, not {value:?}"))?;
                if !(0.0..=1.0).contains(&p) {
                    return Err(format!("p={value} is not between 0 and 1"));
                }
                when = Some(When::Probability(p));
            }
            "times" => times = Some(number()?),
            "seed" => seed = number()?.max(1),
            "error" => {
                fault = match value {
                    "transient" => Fault::Transient,
                    "timeout" => Fault::Timeout,
                    "reset" => Fault::Reset,
                    "permanent" => Fault::Permanent,
                    "crash" => Fault::Crash,
                    "crash-after" => Fault::CrashAfter,
                    _ => return Err(format!("unknown error {value:?}")),
                }
            }
            _ => return Err(format!("unknown field {name:?}")),
        }
    }
    let when = when.ok_or("a rule needs nth=, after= or p=")?;
    if matches!(when, When::Nth(_)) && times.is_none() {
        times = Some(1);
    }
    Ok(Rule {
        ops,
        key,
        when,
        times,
        fault,
        seen: AtomicU64::new(0),
        fired: AtomicU64::new(0),
        random: Mutex::new(seed),
    })
}

/// Whether `key` matches `pattern`, where `*` matches any run of characters.
fn matches(pattern: &str, key: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == key;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !key.starts_with(first) || key.len() < first.len() + last.len() || !key.ends_with(last) {
        return false;
    }
    let mut rest = &key[first.len()..key.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    true
}

impl Rule {
    /// Whether this rule fires for a request of `op` on `key`.
    fn fires(&self, op: Op, key: &str) -> bool {
        if !self.ops.contains(&op) || !matches(&self.key, key) {
            return false;
        }
        let n = self.seen.fetch_add(1, Ordering::SeqCst) + 1;
        let hit = match self.when {
            When::Nth(nth) => n == nth,
            When::After(after) => n > after,
            When::Probability(p) => {
                let mut state = self.random.lock().unwrap_or_else(|e| e.into_inner());
                *state ^= *state << 13;
                *state ^= *state >> 7;
                *state ^= *state << 17;
                (*state >> 11) as f64 / (1u64 << 53) as f64 <= p
            }
        };
        if !hit {
            return false;
        }
        let fired = self.fired.fetch_add(1, Ordering::SeqCst);
        self.times.is_none_or(|limit| fired < limit)
    }
}

/// Fails the requests its rules choose; passes every other one to the store it wraps.
#[derive(Debug)]
pub struct FaultStore<S> {
    inner: S,
    rules: Vec<Rule>,
    /// Requests failed so far.
    injected: AtomicU64,
}

impl<S: ObjectStore> FaultStore<S> {
    /// Wraps `inner` with the rules of `spec` (see the module documentation).
    pub fn new(inner: S, spec: &str) -> Result<Self, SpecError> {
        let rules = spec
            .split(';')
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .map(parse_rule)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|reason| SpecError {
                spec: spec.to_owned(),
                reason,
            })?;
        Ok(FaultStore {
            inner,
            rules,
            injected: AtomicU64::new(0),
        })
    }

    /// How many requests were failed so far.
    pub fn injected(&self) -> u64 {
        self.injected.load(Ordering::SeqCst)
    }

    /// The fault for this request, if a rule fires (every rule sees every request, so
    /// their counts do not depend on each other).
    fn fault(&self, op: Op, key: &str) -> Option<Fault> {
        let mut chosen = None;
        for rule in &self.rules {
            if rule.fires(op, key) && chosen.is_none() {
                chosen = Some(rule.fault);
            }
        }
        if chosen.is_some() {
            self.injected.fetch_add(1, Ordering::SeqCst);
        }
        chosen
    }

    /// Runs `request` unless a rule fails it.
    async fn run<T>(
        &self,
        op: Op,
        key: &str,
        request: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        match self.fault(op, key) {
            None => request.await,
            Some(Fault::CrashAfter) => {
                let _ = request.await;
                crash(op, key)
            }
            Some(fault) => Err(injected(fault, op, key)),
        }
    }
}

fn crash(op: Op, key: &str) -> ! {
    eprintln!("stowage: injected crash at {} {key}", op.name());
    std::process::abort()
}

fn injected(fault: Fault, op: Op, key: &str) -> Error {
    let key = key.to_owned();
    let what = op.name();
    match fault {
        Fault::Transient => Error::Transient {
            key,
            source: format!("injected fault: 503 Service Unavailable ({what})").into(),
        },
        Fault::Timeout => Error::Transient {
            key,
            source: Box::new(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("injected fault: {what} timed out"),
            )),
        },
        Fault::Reset => Error::Transient {
            key,
            source: Box::new(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                format!("injected fault: connection reset during {what}"),
            )),
        },
        Fault::Permanent => Error::Other {
            key,
            source: format!("injected fault: permanent failure of {what}").into(),
        },
        Fault::Crash => crash(op, &key),
        Fault::CrashAfter => unreachable!("handled where the request runs"),
    }
}

#[async_trait]
impl<S: ObjectStore> ObjectStore for FaultStore<S> {
    async fn get(&self, key: &Key) -> Result<GetResult> {
        self.run(Op::Get, key.as_str(), self.inner.get(key)).await
    }

    async fn get_range(&self, key: &Key, range: ByteRange) -> Result<Bytes> {
        self.run(Op::GetRange, key.as_str(), self.inner.get_range(key, range))
            .await
    }

    async fn get_range_stream(&self, key: &Key, range: ByteRange) -> Result<ByteStream> {
        self.run(
            Op::GetRange,
            key.as_str(),
            self.inner.get_range_stream(key, range),
        )
        .await
    }

    async fn head(&self, key: &Key) -> Result<ObjectMeta> {
        self.run(Op::Head, key.as_str(), self.inner.head(key)).await
    }

    async fn put(&self, key: &Key, body: Bytes, mode: PutMode) -> Result<ETag> {
        self.run(Op::Put, key.as_str(), self.inner.put(key, body, mode))
            .await
    }

    async fn put_stream(&self, key: &Key, body: ByteStream, mode: PutMode) -> Result<ETag> {
        self.run(
            Op::PutStream,
            key.as_str(),
            self.inner.put_stream(key, body, mode),
        )
        .await
    }

    async fn put_file(&self, key: &Key, path: &Path, mode: PutMode) -> Result<ETag> {
        self.run(
            Op::PutStream,
            key.as_str(),
            self.inner.put_file(key, path, mode),
        )
        .await
    }

    async fn delete(&self, key: &Key) -> Result<()> {
        self.run(Op::Delete, key.as_str(), self.inner.delete(key))
            .await
    }

    fn list(&self, prefix: &str) -> BoxStream<'_, Result<ObjectMeta>> {
        match self.fault(Op::List, prefix) {
            None => self.inner.list(prefix),
            Some(Fault::CrashAfter) => {
                let prefix = prefix.to_owned();
                self.inner
                    .list(&prefix.clone())
                    .chain(stream::once(async move { crash(Op::List, &prefix) }))
                    .boxed()
            }
            Some(fault) => {
                stream::once(std::future::ready(Err(injected(fault, Op::List, prefix)))).boxed()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MemoryStore, ObjectStoreExt};

    fn key(k: &str) -> Key {
        Key::new(k).expect("key")
    }

    #[test]
    fn patterns_and_specs() {
        assert!(matches("*", "a/b"));
        assert!(matches("*/manifest", "x.git/manifest"));
        assert!(!matches("*/manifest", "x.git/manifest.lock"));
        assert!(matches("a*c*e", "abcde"));
        assert!(!matches("a*c*e", "abde"));
        assert!(matches("exact", "exact"));
        for bad in [
            "op=get",
            "nth=x",
            "p=2",
            "op=nope,nth=1",
            "nth=1,error=boom",
            "nth",
            "what=1,nth=1",
        ] {
            assert!(FaultStore::new(MemoryStore::new(), bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn rules_fail_the_requests_they_choose() {
        let store = FaultStore::new(
            MemoryStore::new(),
            "op=put,key=*/manifest,nth=2,error=permanent; op=get,after=1,times=2",
        )
        .expect("spec");
        let m = key("r.git/manifest");
        store
            .put(&m, Bytes::from_static(b"1"), PutMode::Overwrite)
            .await
            .expect("first put passes");
        let second = store
            .put(&m, Bytes::from_static(b"2"), PutMode::Overwrite)
            .await;
        assert!(matches!(second, Err(Error::Other { .. })), "{second:?}");
        store
            .put(&m, Bytes::from_static(b"3"), PutMode::Overwrite)
            .await
            .expect("nth fires once");
        store
            .put(
                &key("r.git/other"),
                Bytes::from_static(b"x"),
                PutMode::Overwrite,
            )
            .await
            .expect("another key");
        assert!(store.get(&m).await.is_ok(), "the first get passes");
        for _ in 0..2 {
            let e = store.get(&m).await.expect_err("after=1 fires");
            assert!(e.is_retryable());
        }
        assert_eq!(
            &store.get(&m).await.expect("times=2 is spent").bytes[..],
            b"3"
        );
        assert_eq!(store.injected(), 3);
    }

    #[tokio::test]
    async fn probabilities_are_repeatable_by_seed() {
        let run = || async {
            let store = FaultStore::new(MemoryStore::new(), "p=0.5,seed=7").expect("spec");
            let k = key("a/b");
            let mut failed = Vec::new();
            for _ in 0..64 {
                failed.push(store.head(&k).await.is_err_and(|e| e.is_retryable()));
            }
            failed
        };
        let first = run().await;
        assert_eq!(first, run().await);
        let n = first.iter().filter(|f| **f).count();
        assert!((16..=48).contains(&n), "{n} of 64");
        let store = FaultStore::new(MemoryStore::new(), "op=list,nth=1").expect("spec");
        assert!(store.list_all("a/").await.is_err());
        assert!(store.list_all("a/").await.is_ok());
    }
}
