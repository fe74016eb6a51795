//! State metrics, read at scrape time: the numbers `/-/stats` shows, taken from the
//! same counters by the same function ([`State::snapshot`]).

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};

use crate::disk_cache::DiskCacheStore;
use crate::lfs::LfsCounters;
use crate::repo::Repos;
use stowage_store::retry::RetryStats;

/// Where the state metrics are read from.
#[derive(Debug, Clone)]
pub struct State {
    pub repos: Arc<Repos>,
    pub retries: RetryStats,
    pub lfs: Arc<LfsCounters>,
    pub disk_cache: Option<DiskCacheStore>,
}

/// One cache's numbers.
#[derive(Debug, Clone, Copy)]
pub struct CacheNumbers {
    pub name: &'static str,
    pub bytes: u64,
    pub hits: u64,
    pub misses: u64,
}

/// Everything [`State`] tells, at one moment.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Store requests by kind, as the repository layer asked them (before retries).
    pub store_requests: Vec<(&'static str, u64)>,
    pub caches: Vec<CacheNumbers>,
    pub retries: stowage_store::retry::RetryCounts,
    pub lfs_bytes_received: u64,
    pub lfs_bytes_sent: u64,
    pub lfs_direct_uploads: u64,
    pub lfs_direct_downloads: u64,
    pub lfs_resumable_running: u64,
}

impl State {
    pub fn snapshot(&self) -> Snapshot {
        let (index_bytes, pack_bytes, object_bytes) = self.repos.caches.weighted_sizes();
        let c = self.repos.caches.stats();
        let mut caches = vec![
            CacheNumbers {
                name: "index",
                bytes: index_bytes,
                hits: c.index_hits,
                misses: c.index_misses,
            },
            CacheNumbers {
                name: "pack",
                bytes: pack_bytes,
                hits: c.pack_hits,
                misses: c.pack_misses,
            },
            CacheNumbers {
                name: "object",
                bytes: object_bytes,
                hits: c.object_hits,
                misses: c.object_misses,
            },
        ];
        if let Some(disk) = &self.disk_cache {
            let (hits, misses) = disk.hits_and_misses();
            caches.push(CacheNumbers {
                name: "disk",
                bytes: disk.held_bytes(),
                hits,
                misses,
            });
        }
        let read = LfsCounters::get;
        Snapshot {
            store_requests: self.repos.store_counts().fields().to_vec(),
            caches,
            retries: self.retries.counts(),
            lfs_bytes_received: read(&self.lfs.bytes_received),
            lfs_bytes_sent: read(&self.lfs.bytes_sent),
            lfs_direct_uploads: read(&self.lfs.direct_uploads),
            lfs_direct_downloads: read(&self.lfs.direct_downloads),
            lfs_resumable_running: read(&self.lfs.resumable_running),
        }
    }

    /// A registry holding this state's collector.
    pub(super) fn registry(&self) -> Registry {
        let mut registry = Registry::with_prefix("stowage");
        registry.register_collector(Box::new(self.clone()));
        registry
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabels {
    cache: &'static str,
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabel {
    cache: &'static str,
}

/// A counter family with one label set per value.
fn counters<L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    values: impl IntoIterator<Item = (L, u64)>,
) -> Result<(), std::fmt::Error> {
    let mut family =
        encoder.encode_descriptor(name, help, unit, ConstCounter::new(0u64).metric_type())?;
    for (labels, value) in values {
        ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

fn counter(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let metric = ConstCounter::new(value);
    metric.encode(encoder.encode_descriptor(name, help, unit, metric.metric_type())?)
}

fn gauge(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let metric = ConstGauge::new(value as i64);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

impl Collector for State {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let s = self.snapshot();
        let e = &mut encoder;
        counters(
            e,
            "store_logical_requests",
            "Store requests asked by the repository layer, by kind (retries not counted)",
            None,
            s.store_requests
                .iter()
                .map(|(kind, n)| (KindLabel { kind }, *n)),
        )?;
        counters(
            e,
            "cache_lookups",
            "Cache lookups, by cache and result",
            None,
            s.caches.iter().flat_map(|c| {
                [
                    (
                        CacheLabels {
                            cache: c.name,
                            result: "hit",
                        },
                        c.hits,
                    ),
                    (
                        CacheLabels {
                            cache: c.name,
                            result: "miss",
                        },
                        c.misses,
                    ),
                ]
            }),
        )?;
        let mut held = e.encode_descriptor(
            "cache",
            "Bytes held by each cache",
            Some(&Unit::Bytes),
            ConstGauge::new(0i64).metric_type(),
        )?;
        for c in &s.caches {
            ConstGauge::new(c.bytes as i64)
                .encode(held.encode_family(&CacheLabel { cache: c.name })?)?;
        }
        let r = s.retries;
        counter(
            e,
            "store_retries",
            "Store requests sent again after a transient fault",
            None,
            r.retries,
        )?;
        counter(
            e,
            "store_retries_exhausted",
            "Store requests that still failed when attempts or time ran out",
            None,
            r.exhausted,
        )?;
        counter(
            e,
            "store_timeouts",
            "Store request attempts cut off by the attempt timeout",
            None,
            r.timeouts,
        )?;
        counter(
            e,
            "lfs_received",
            "Git LFS object bytes received through this server",
            Some(&Unit::Bytes),
            s.lfs_bytes_received,
        )?;
        counter(
            e,
            "lfs_sent",
            "Git LFS object bytes sent by this server",
            Some(&Unit::Bytes),
            s.lfs_bytes_sent,
        )?;
        counter(
            e,
            "lfs_direct_uploads",
            "Git LFS uploads sent straight to the store",
            None,
            s.lfs_direct_uploads,
        )?;
        counter(
            e,
            "lfs_direct_downloads",
            "Git LFS downloads sent straight from the store",
            None,
            s.lfs_direct_downloads,
        )?;
        gauge(
            e,
            "lfs_resumable_uploads_running",
            "Resumable Git LFS upload requests being received",
            s.lfs_resumable_running,
        )
    }
}
