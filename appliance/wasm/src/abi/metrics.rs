//! Metrics a guest defines (`proxy_define_metric`, `proxy_increment_metric`,
//! `proxy_record_metric`, `proxy_get_metric`), exported on /metrics as
//! `gatehouse_wasm_guest_{counter_total,gauge,histogram}{plugin,name}`.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use wasmtime::{Caller, Linker};

use crate::abi::{Answer, Status, answer, memory};
use crate::state::HostState;

/// Most metrics one plugin may define.
const MAX_METRICS: usize = 1000;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct GuestLabels {
    plugin: String,
    name: String,
}

type HistogramFamily = Family<GuestLabels, Histogram, fn() -> Histogram>;

fn histogram() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 4.0, 12))
}

/// The families every plugin's guest metrics live in.
#[derive(Debug, Clone)]
pub(crate) struct GuestFamilies {
    pub counters: Family<GuestLabels, Counter>,
    pub gauges: Family<GuestLabels, Gauge>,
    pub histograms: HistogramFamily,
}

impl Default for GuestFamilies {
    fn default() -> Self {
        Self {
            counters: Family::default(),
            gauges: Family::default(),
            histograms: Family::new_with_constructor(histogram as fn() -> Histogram),
        }
    }
}

#[derive(Debug, Clone)]
enum Metric {
    Counter(Counter),
    Gauge(Gauge),
    Histogram(Histogram),
}

/// Defined metrics by id - 1, and ids by (kind, name).
type Defined = (Vec<Metric>, HashMap<(u32, String), u32>);

/// One plugin's defined metrics, by id (index + 1) and by name; kept across reloads.
#[derive(Debug)]
pub struct GuestMetrics {
    plugin: String,
    families: GuestFamilies,
    defined: Mutex<Defined>,
}

impl GuestMetrics {
    pub(crate) fn new(plugin: &str, families: GuestFamilies) -> Arc<Self> {
        Arc::new(Self { plugin: plugin.to_owned(), families, defined: Mutex::default() })
    }

    fn define(&self, kind: u32, name: &str) -> Result<u32, Status> {
        let mut guard = self.defined.lock();
        let (list, by_name) = &mut *guard;
        if let Some(id) = by_name.get(&(kind, name.to_owned())) {
            return Ok(*id);
        }
        if list.len() >= MAX_METRICS {
            return Err(Status::InternalFailure);
        }
        let labels = GuestLabels { plugin: self.plugin.clone(), name: name.to_owned() };
        let metric = match kind {
            0 => Metric::Counter(self.families.counters.get_or_create(&labels).clone()),
            1 => Metric::Gauge(self.families.gauges.get_or_create(&labels).clone()),
            2 => Metric::Histogram(self.families.histograms.get_or_create(&labels).clone()),
            _ => return Err(Status::BadArgument),
        };
        list.push(metric);
        let id = list.len() as u32;
        by_name.insert((kind, name.to_owned()), id);
        Ok(id)
    }

    fn with<T>(&self, id: u32, f: impl FnOnce(&Metric) -> Result<T, Status>) -> Result<T, Status> {
        let guard = self.defined.lock();
        let metric =
            id.checked_sub(1).and_then(|i| guard.0.get(i as usize)).ok_or(Status::NotFound)?;
        f(metric)
    }
}

pub(crate) fn link(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_define_metric",
        |mut c: Caller<'_, HostState>, kind: u32, np: u32, nl: u32, ret: u32| -> Answer {
            let id = memory::read_str(&mut c, np, nl)
                .and_then(|name| c.data().plugin.metrics.define(kind, &name));
            answer(id.and_then(|id| Ok(memory::write_u32(&mut c, ret, id)?)))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_increment_metric",
        |c: Caller<'_, HostState>, id: u32, offset: i64| -> Answer {
            answer(c.data().plugin.metrics.with(id, |m| match m {
                Metric::Counter(c) if offset >= 0 => {
                    c.inc_by(offset as u64);
                    Ok(())
                }
                Metric::Gauge(g) => {
                    g.inc_by(offset);
                    Ok(())
                }
                _ => Err(Status::BadArgument),
            }))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_record_metric",
        |c: Caller<'_, HostState>, id: u32, value: u64| -> Answer {
            answer(c.data().plugin.metrics.with(id, |m| {
                match m {
                    // A counter only moves up: recording a higher total adds the difference.
                    Metric::Counter(c) => {
                        let now = c.get();
                        if value > now {
                            c.inc_by(value - now);
                        }
                    }
                    Metric::Gauge(g) => {
                        g.set(i64::try_from(value).unwrap_or(i64::MAX));
                    }
                    Metric::Histogram(h) => h.observe(value as f64),
                }
                Ok(())
            }))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_metric",
        |mut c: Caller<'_, HostState>, id: u32, ret: u32| -> Answer {
            let value = c.data().plugin.metrics.with(id, |m| match m {
                Metric::Counter(c) => Ok(c.get()),
                Metric::Gauge(g) => Ok(g.get() as u64),
                Metric::Histogram(_) => Err(Status::BadArgument),
            });
            answer(value.and_then(|v| Ok(memory::write_u64(&mut c, ret, v)?)))
        },
    )?;
    Ok(())
}
