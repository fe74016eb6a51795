//! Admission control: how many pack-generating and pack-receiving requests run at
//! once, per repository and in the whole process, each with a bounded queue and a
//! longest wait. A request beyond them is refused before any of its work starts:
//! [`Refused::Repository`] (HTTP 429: this repository is busy, others are not) or
//! [`Refused::Process`] (HTTP 503: the server is).
//!
//! A request first takes a place of its repository, then one of the process, both
//! within one wait. The places are held by a [`Permit`] until the response ends.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::metrics::{ReasonLabel, ScopeLabel, record};

/// The limits (`--max-concurrent-per-repo`, `--max-queue-per-repo`, `--max-concurrent`,
/// `--max-queue`, `--max-queue-wait-ms`).
#[derive(Debug, Clone)]
pub struct Limits {
    /// Requests running at once on one repository.
    pub per_repo: usize,
    /// Requests waiting for a place on one repository (0: refuse at once when full).
    pub per_repo_queue: usize,
    /// Requests running at once in the process.
    pub process: usize,
    /// Requests waiting for a place in the process.
    pub process_queue: usize,
    /// The longest a request waits for its places.
    pub wait: Duration,
}

impl Default for Limits {
    /// For a 2-core machine: pack work is CPU and store bound, a few per core.
    fn default() -> Self {
        Limits {
            per_repo: 8,
            per_repo_queue: 32,
            process: 16,
            process_queue: 64,
            wait: Duration::from_secs(10),
        }
    }
}

/// Why a request was not admitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("too many requests for this repository are running; try again in a moment")]
    Repository,
    #[error("the server is busy; try again in a moment")]
    Process,
}

impl Refused {
    /// How long to suggest the client waits (`Retry-After`).
    pub fn retry_after(&self) -> Duration {
        match self {
            Refused::Repository => Duration::from_secs(5),
            Refused::Process => Duration::from_secs(10),
        }
    }
}

/// One scope's places and queue.
#[derive(Debug)]
struct Places {
    running: Arc<Semaphore>,
    queued: AtomicUsize,
    limit: usize,
    queue: usize,
}

impl Places {
    fn new(limit: usize, queue: usize) -> Self {
        Places {
            running: Arc::new(Semaphore::new(limit.max(1))),
            queued: AtomicUsize::new(0),
            limit: limit.max(1),
            queue,
        }
    }

    fn full(&self) -> bool {
        self.running.available_permits() == 0 && self.queued.load(Ordering::SeqCst) >= self.queue
    }

    /// A place, waiting until `deadline` at most; `None` when the queue is full or the
    /// wait is over.
    async fn take(&self, scope: &'static str, deadline: Instant) -> Option<OwnedSemaphorePermit> {
        if let Ok(permit) = self.running.clone().try_acquire_owned() {
            return Some(permit);
        }
        if self.queued.fetch_add(1, Ordering::SeqCst) >= self.queue {
            self.queued.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        record(|m| {
            m.admission_queued
                .get_or_create(&ScopeLabel { scope })
                .inc()
        });
        let started = Instant::now();
        let wait = deadline.saturating_duration_since(started);
        let permit = tokio::time::timeout(wait, self.running.clone().acquire_owned()).await;
        self.queued.fetch_sub(1, Ordering::SeqCst);
        record(|m| {
            m.admission_queued
                .get_or_create(&ScopeLabel { scope })
                .dec();
            m.admission_wait
                .get_or_create(&ScopeLabel { scope })
                .observe(started.elapsed().as_secs_f64());
        });
        permit.ok().and_then(Result::ok)
    }
}

/// The admission state of a process.
#[derive(Debug, Clone)]
pub struct Admission {
    limits: Limits,
    process: Arc<Places>,
    repos: Arc<Mutex<HashMap<String, Arc<Places>>>>,
}

/// Places held for one request; dropping it frees them.
#[derive(Debug)]
pub struct Permit {
    /// The repository's place and the process's.
    places: Option<(OwnedSemaphorePermit, OwnedSemaphorePermit)>,
    repo: String,
    admission: Admission,
}

impl Drop for Permit {
    fn drop(&mut self) {
        drop(self.places.take());
        record(|m| {
            m.admission_in_flight
                .get_or_create(&ScopeLabel { scope: "process" })
                .dec();
        });
        self.admission.forget_idle(&self.repo);
    }
}

impl Admission {
    pub fn new(limits: Limits) -> Self {
        Admission {
            process: Arc::new(Places::new(limits.process, limits.process_queue)),
            limits,
            repos: Arc::default(),
        }
    }

    fn places_of(&self, repo: &str) -> Arc<Places> {
        let mut repos = self.repos.lock().unwrap_or_else(|e| e.into_inner());
        repos
            .entry(repo.to_owned())
            .or_insert_with(|| {
                Arc::new(Places::new(
                    self.limits.per_repo,
                    self.limits.per_repo_queue,
                ))
            })
            .clone()
    }

    /// Drops the entry of a repository nobody runs or waits on.
    fn forget_idle(&self, repo: &str) {
        let mut repos = self.repos.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(places) = repos.get(repo)
            && Arc::strong_count(places) == 1
            && places.running.available_permits() == places.limit
        {
            repos.remove(repo);
        }
    }

    /// Whether a request for `repo` would be refused now, without taking a place: for
    /// the reference advertisement that comes before a pack request, so that git shows
    /// the reason to its user.
    pub fn check(&self, repo: &str) -> Result<(), Refused> {
        let busy = self
            .repos
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(repo)
            .is_some_and(|places| places.full());
        if busy {
            refused(&Refused::Repository, "repo_busy");
            return Err(Refused::Repository);
        }
        if self.process.full() {
            refused(&Refused::Process, "process_busy");
            return Err(Refused::Process);
        }
        Ok(())
    }

    /// Places for a request on `repo`, waiting for them at most the configured time.
    pub async fn admit(&self, repo: &str) -> Result<Permit, Refused> {
        let deadline = Instant::now() + self.limits.wait;
        let places = self.places_of(repo);
        let repo_permit = places.take("repo", deadline).await;
        drop(places);
        let Some(repo_permit) = repo_permit else {
            self.forget_idle(repo);
            refused(&Refused::Repository, "repo_queue");
            return Err(Refused::Repository);
        };
        let Some(process_permit) = self.process.take("process", deadline).await else {
            drop(repo_permit);
            self.forget_idle(repo);
            refused(&Refused::Process, "process_queue");
            return Err(Refused::Process);
        };
        record(|m| {
            m.admission_in_flight
                .get_or_create(&ScopeLabel { scope: "process" })
                .inc();
        });
        Ok(Permit {
            places: Some((repo_permit, process_permit)),
            repo: repo.to_owned(),
            admission: self.clone(),
        })
    }

    /// Requests running on `repo` now.
    pub fn running(&self, repo: &str) -> usize {
        self.repos
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(repo)
            .map_or(0, |p| p.limit - p.running.available_permits())
    }
}

fn refused(refusal: &Refused, reason: &'static str) {
    tracing::info!(%refusal, reason, "request refused by admission control");
    record(|m| {
        m.admission_refused
            .get_or_create(&ReasonLabel { reason })
            .inc()
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_repo: usize, per_repo_queue: usize, process: usize) -> Limits {
        Limits {
            per_repo,
            per_repo_queue,
            process,
            process_queue: 0,
            wait: Duration::from_millis(200),
        }
    }

    #[tokio::test]
    async fn a_full_repository_refuses_at_once_without_a_queue() {
        let admission = Admission::new(limits(2, 0, 10));
        let a = admission.admit("r").await.expect("first");
        let _b = admission.admit("r").await.expect("second");
        assert_eq!(admission.check("r"), Err(Refused::Repository));
        let started = Instant::now();
        assert_eq!(admission.admit("r").await.err(), Some(Refused::Repository));
        assert!(started.elapsed() < Duration::from_millis(100), "no waiting");
        // Another repository is not affected.
        let _other = admission.admit("s").await.expect("other repository");
        drop(a);
        admission.check("r").expect("a place is free");
        let _c = admission.admit("r").await.expect("after one ended");
    }

    #[tokio::test]
    async fn a_queued_request_waits_for_a_place_or_its_time() {
        let admission = Admission::new(limits(1, 1, 10));
        let first = admission.admit("r").await.expect("first");
        // Waits its 200 ms and gives up.
        assert_eq!(admission.admit("r").await.err(), Some(Refused::Repository));
        // Gets the place when the first ends within the wait.
        let waiting = tokio::spawn({
            let admission = admission.clone();
            async move { admission.admit("r").await.map(|_| ()) }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(first);
        waiting
            .await
            .expect("task")
            .expect("admitted after the first ended");
        assert_eq!(admission.running("r"), 0);
        assert!(
            admission.repos.lock().expect("lock").is_empty(),
            "idle entries go"
        );
    }

    #[tokio::test]
    async fn a_full_process_refuses_with_its_own_reason() {
        let admission = Admission::new(limits(5, 5, 1));
        let _a = admission.admit("r").await.expect("first");
        assert_eq!(admission.check("s"), Err(Refused::Process));
        assert_eq!(admission.admit("s").await.err(), Some(Refused::Process));
        assert_eq!(
            admission.running("s"),
            0,
            "its repository place is given back"
        );
    }
}
