//! The traffic light: green, yellow or red from one window's signals and the queue, with
//! hysteresis. A worse light comes at once (the machine is short now); a better one only after
//! it held for `calm_windows` windows in a row, judged with a margin (thresholds a quarter
//! stricter), so a signal hovering at a threshold does not flap the light.

use super::signals::Signals;

/// The light.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Color {
    /// Resources are free: calls in parallel.
    Green,
    /// The queue builds while the machine is busy: batches, fewer lanes.
    Yellow,
    /// Memory nearly gone or pressure severe: one lane, admission tightened.
    Red,
}

impl Color {
    /// Its name, for logs, metrics and the status page.
    pub fn name(self) -> &'static str {
        match self {
            Color::Green => "green",
            Color::Yellow => "yellow",
            Color::Red => "red",
        }
    }

    /// `green`, `yellow` or `red`.
    pub fn parse(text: &str) -> Option<Color> {
        match text {
            "green" => Some(Color::Green),
            "yellow" => Some(Color::Yellow),
            "red" => Some(Color::Red),
            _ => None,
        }
    }
}

/// Where the light changes (shares, 0..=1).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Thresholds {
    /// CPU pressure that, with a queue building, turns it yellow.
    pub cpu_yellow: f64,
    /// CPU pressure that turns it red.
    pub cpu_red: f64,
    /// Memory pressure that, with a queue building, turns it yellow.
    pub memory_yellow: f64,
    /// Memory pressure that turns it red.
    pub memory_red: f64,
    /// Memory headroom below which, with a queue building, it turns yellow.
    pub headroom_yellow: f64,
    /// Memory headroom below which it turns red.
    pub headroom_red: f64,
    /// Windows in a row a better light must hold before it is shown.
    pub calm_windows: u32,
}

impl Default for Thresholds {
    fn default() -> Thresholds {
        Thresholds {
            cpu_yellow: 0.25,
            cpu_red: 0.90,
            memory_yellow: 0.05,
            memory_red: 0.25,
            headroom_yellow: 0.15,
            headroom_red: 0.05,
            calm_windows: 4,
        }
    }
}

/// How much stricter the thresholds are when judging whether a better light may show.
const MARGIN: f64 = 0.75;

/// What the light sees in one window.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Reading {
    /// The machine.
    pub signals: Signals,
    /// Requests waiting to start.
    pub queued: usize,
}

/// The light and its memory of calm windows.
#[derive(Debug)]
pub struct Light {
    color: Color,
    calm: u32,
}

impl Default for Light {
    fn default() -> Light {
        Light {
            color: Color::Green,
            calm: 0,
        }
    }
}

impl Light {
    /// The light shown now.
    pub fn color(&self) -> Color {
        self.color
    }

    /// Takes one window's reading; the new light if it changed.
    pub fn update(&mut self, reading: &Reading, t: &Thresholds) -> Option<Color> {
        let now = judge(reading, t, 1.0);
        if now > self.color {
            self.color = now;
            self.calm = 0;
            return Some(now);
        }
        let better = judge(reading, t, MARGIN);
        if better >= self.color {
            self.calm = 0;
            return None;
        }
        self.calm += 1;
        if self.calm < t.calm_windows {
            return None;
        }
        self.calm = 0;
        self.color = better;
        Some(better)
    }
}

/// The light a reading calls for, with thresholds scaled by `margin` (1: as set; below 1:
/// stricter, for leaving a worse light).
fn judge(reading: &Reading, t: &Thresholds, margin: f64) -> Color {
    let s = &reading.signals;
    let headroom = s.headroom.unwrap_or(1.0);
    if headroom < t.headroom_red / margin
        || s.memory_pressure >= t.memory_red * margin
        || s.cpu_pressure >= t.cpu_red * margin
    {
        return Color::Red;
    }
    let busy = s.cpu_pressure >= t.cpu_yellow * margin
        || s.memory_pressure >= t.memory_yellow * margin
        || headroom < t.headroom_yellow / margin;
    if busy && reading.queued > 0 {
        Color::Yellow
    } else {
        Color::Green
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(cpu: f64, memory: f64, headroom: f64, queued: usize) -> Reading {
        Reading {
            signals: Signals {
                cpu_pressure: cpu,
                memory_pressure: memory,
                headroom: Some(headroom),
                headroom_bytes: None,
            },
            queued,
        }
    }

    /// Feeds windows one by one; the light after each.
    fn run(windows: &[Reading]) -> Vec<Color> {
        let mut light = Light::default();
        let t = Thresholds::default();
        windows
            .iter()
            .map(|r| {
                light.update(r, &t);
                light.color()
            })
            .collect()
    }

    use Color::{Green as G, Red as R, Yellow as Y};

    #[test]
    fn busy_cpu_turns_it_yellow_only_while_a_queue_builds() {
        let idle_but_busy = reading(0.6, 0.0, 0.8, 0);
        let queued = reading(0.6, 0.0, 0.8, 5);
        assert_eq!(run(&[idle_but_busy, idle_but_busy]), [G, G]);
        assert_eq!(run(&[queued]), [Y], "at once, in the first window");
    }

    #[test]
    fn severe_pressure_or_no_headroom_turns_it_red_at_once() {
        assert_eq!(run(&[reading(0.95, 0.0, 0.8, 0)]), [R]);
        assert_eq!(run(&[reading(0.0, 0.3, 0.8, 0)]), [R]);
        assert_eq!(run(&[reading(0.0, 0.0, 0.02, 0)]), [R]);
        assert_eq!(
            run(&[reading(0.0, 0.0, 0.10, 3)]),
            [Y],
            "headroom short, queue building"
        );
    }

    #[test]
    fn a_better_light_waits_for_calm_windows() {
        let hog = reading(0.95, 0.0, 0.8, 4);
        let calm = reading(0.05, 0.0, 0.8, 0);
        let lights = run(&[hog, calm, calm, calm, calm, calm]);
        assert_eq!(lights, [R, R, R, R, G, G]);
    }

    #[test]
    fn a_signal_hovering_at_a_threshold_does_not_flap() {
        // CPU pressure alternating just above and below the yellow threshold with a queue:
        // yellow comes once and stays (below-threshold windows are within the margin).
        let above = reading(0.26, 0.0, 0.8, 2);
        let below = reading(0.24, 0.0, 0.8, 2);
        let windows: Vec<Reading> = (0..20)
            .map(|i| if i % 2 == 0 { above } else { below })
            .collect();
        let lights = run(&windows);
        assert!(lights.iter().all(|c| *c == Y), "{lights:?}");
        // And one calm window between busy ones does not reset it to green either.
        let calm = reading(0.0, 0.0, 0.8, 0);
        assert_eq!(run(&[above, calm, above, calm, calm]), [Y, Y, Y, Y, Y]);
    }

    #[test]
    fn unknown_headroom_counts_as_ample() {
        let mut r = reading(0.0, 0.0, 0.0, 9);
        r.signals.headroom = None;
        assert_eq!(run(&[r]), [G]);
    }

    #[test]
    fn recorded_samples_of_a_cpu_hog_and_its_end() {
        // CPU `some` shares of successive 500 ms windows, recorded by bench/jellyfish (J3) on a
        // 2-core machine: an idle server, then four busy processes beside it for 6 s, then
        // none. Nothing was queued. Red after the second window at 100%, green again after
        // four calm windows.
        let cpu = [
            0.01, 0.00, 0.01, 0.59, 0.78, 1.00, 0.87, 1.00, 0.92, 1.00, 0.83, 1.00, 0.92, 1.00,
            0.91, 0.10, 0.01, 0.01, 0.01, 0.01, 0.00,
        ];
        let windows: Vec<Reading> = cpu.iter().map(|&c| reading(c, 0.0, 0.98, 0)).collect();
        let lights = run(&windows);
        let mut expected = vec![G; 5];
        expected.extend([R; 13]);
        expected.extend([G; 3]);
        assert_eq!(lights, expected);
    }
}
