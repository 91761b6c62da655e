//! The jellyfish (`--mode jellyfish`): a traffic light on the machine's resources that picks
//! how the queue is served. Green: up to `--lanes-max` calls at once, on executor replicas of
//! each route's version (never more than a handler's own `max_lanes`). Yellow: half the lanes,
//! and queued requests for a route that takes batches go to one executor in one call. Red: one
//! lane, and admission shrinks to a quarter of the queue and connection limits, so the machine
//! sheds instead of swapping; `/-/ready` says not ready.
//!
//! The crab (the default) has no light: `--lanes` (1) calls at once, never batches.

pub mod light;
pub mod signals;

use std::time::{Duration, Instant};

use light::{Color, Light, Reading, Thresholds};
use signals::{Roots, Sampler, Signals};

/// How the queue is served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// One lane (or `--lanes`), strictly serial, no light.
    Crab,
    /// The light decides.
    Jellyfish,
}

/// The jellyfish's settings (from flags).
#[derive(Clone, Copy, Debug)]
pub struct JellyfishSettings {
    /// Calls at once on green.
    pub lanes_max: usize,
    /// Requests in one batch on yellow.
    pub batch_max: usize,
    /// Where the light changes.
    pub thresholds: Thresholds,
    /// How often the light is recomputed.
    pub interval: Duration,
    /// A light pinned by the operator (`--light`), instead of the signals'.
    pub pinned: Option<Color>,
}

/// In red, admission takes this fraction of the queue and connection limits.
pub const RED_SHARE: usize = 4;

/// The light, its signals, and what it means for lanes, batches and admission.
pub struct Jellyfish {
    settings: JellyfishSettings,
    sampler: Sampler,
    light: Light,
    last: Reading,
    next_at: Instant,
    changes: u64,
}

impl Jellyfish {
    /// Opens the signals; the light starts green (or pinned).
    pub fn new(settings: JellyfishSettings) -> Jellyfish {
        Jellyfish {
            settings,
            sampler: Sampler::open(&Roots::default()),
            light: Light::default(),
            last: Reading::default(),
            next_at: Instant::now(),
            changes: 0,
        }
    }

    /// Where the signals come from (said once at start).
    pub fn source(&self) -> &str {
        if self.settings.pinned.is_some() {
            "pinned by --light"
        } else {
            &self.sampler.source
        }
    }

    /// Recomputes the light if its interval has passed; the new light if it changed.
    pub fn tick(&mut self, now: Instant, queued: usize) -> Option<Color> {
        if now < self.next_at {
            return None;
        }
        self.next_at = now + self.settings.interval;
        let before = self.color();
        self.last = Reading {
            signals: self.sampler.read(),
            queued,
        };
        self.light.update(&self.last, &self.settings.thresholds);
        let after = self.color();
        (after != before).then(|| {
            self.changes += 1;
            after
        })
    }

    /// The light in force.
    pub fn color(&self) -> Color {
        self.settings.pinned.unwrap_or(self.light.color())
    }

    /// What it saw in the last window.
    pub fn signals(&self) -> Signals {
        self.last.signals
    }

    /// Calls that may run at once under the light in force.
    pub fn lanes(&self) -> usize {
        let max = self.settings.lanes_max.max(1);
        match self.color() {
            Color::Green => max,
            Color::Yellow => max.div_ceil(2),
            Color::Red => 1,
        }
    }

    /// Requests one batch may hold under the light in force (1: no batches).
    pub fn batch_max(&self) -> usize {
        match self.color() {
            Color::Yellow => self.settings.batch_max.max(1),
            Color::Green | Color::Red => 1,
        }
    }

    /// Requests one batch may hold for a route at its own lane cap (its handler's `max_lanes`
    /// reached): under green too, since such a route's queue has no replica to go to, and a
    /// batch is then the only way to serve it faster (a model that takes every core alone
    /// never raises the CPU pressure that would turn the light yellow). None under red.
    pub fn capped_batch_max(&self) -> usize {
        match self.color() {
            Color::Green | Color::Yellow => self.settings.batch_max.max(1),
            Color::Red => 1,
        }
    }

    /// Whether admission is tightened (red).
    pub fn is_red(&self) -> bool {
        self.color() == Color::Red
    }

    /// What the admin routes show of it.
    pub fn view(&self) -> LightView {
        LightView {
            color: self.color(),
            signals: self.signals(),
            changes: self.changes,
            lanes: self.lanes(),
            batch_max: self.batch_max(),
            pinned: self.settings.pinned.is_some(),
        }
    }
}

/// The light and its inputs, for `/-/metrics`, `/-/plugins`, `/-/ready` and the status page.
#[derive(Clone, Copy, Debug)]
pub struct LightView {
    /// The light in force.
    pub color: Color,
    /// Its inputs in the last window.
    pub signals: Signals,
    /// How many times it changed.
    pub changes: u64,
    /// Calls it allows at once.
    pub lanes: usize,
    /// Requests it allows in one batch.
    pub batch_max: usize,
    /// Pinned by `--light`.
    pub pinned: bool,
}

/// `"mode":"crab",` or `"mode":"jellyfish",` and the light's fields with a comma after, for
/// the JSON routes (`/-/plugins`, `/-/status`).
pub fn mode_json(light: Option<&LightView>) -> String {
    match light {
        None => "\"mode\":\"crab\",".to_owned(),
        Some(light) => format!("\"mode\":\"jellyfish\",{},", light.json_fields()),
    }
}

impl LightView {
    /// `"light":"green","cpu_pressure":0.01,...` (no braces), for the JSON routes.
    pub fn json_fields(&self) -> String {
        let s = &self.signals;
        format!(
            "\"light\":\"{}\",\"light_pinned\":{},\"cpu_pressure\":{:.4},\"memory_pressure\":{:.4},\
             \"memory_headroom\":{},\"memory_headroom_bytes\":{},\"light_changes\":{},\
             \"lanes_allowed\":{},\"batch_max\":{}",
            self.color.name(),
            self.pinned,
            s.cpu_pressure,
            s.memory_pressure,
            s.headroom.map_or("null".to_owned(), |h| format!("{h:.4}")),
            s.headroom_bytes.map_or("null".to_owned(), |b| b.to_string()),
            self.changes,
            self.lanes,
            self.batch_max,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pinned(color: Color) -> Jellyfish {
        Jellyfish::new(JellyfishSettings {
            lanes_max: 4,
            batch_max: 8,
            thresholds: Thresholds::default(),
            interval: Duration::from_millis(500),
            pinned: Some(color),
        })
    }

    #[test]
    fn each_light_has_its_lanes_batches_and_admission() {
        let green = pinned(Color::Green);
        assert_eq!(
            (green.lanes(), green.batch_max(), green.is_red()),
            (4, 1, false)
        );
        let yellow = pinned(Color::Yellow);
        assert_eq!(
            (yellow.lanes(), yellow.batch_max(), yellow.is_red()),
            (2, 8, false)
        );
        let red = pinned(Color::Red);
        assert_eq!((red.lanes(), red.batch_max(), red.is_red()), (1, 1, true));
        assert_eq!(red.source(), "pinned by --light");
    }

    #[test]
    fn a_pinned_light_never_changes() {
        let mut red = pinned(Color::Red);
        let now = Instant::now();
        assert_eq!(red.tick(now, 100), None);
        assert_eq!(red.tick(now + Duration::from_secs(1), 0), None);
        assert_eq!(red.color(), Color::Red);
    }
}
