//! The last things that happened to the handlers (versions loaded, swapped, refused and
//! removed; executors that crashed or passed a deadline), kept for the status page: a bounded
//! ring, written where those log lines are written, read when someone looks.

use std::collections::VecDeque;
use std::time::SystemTime;

/// How many events are kept.
const KEPT: usize = 64;

/// What kind of event it is (a word the status page can style).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A first version of a route started serving.
    Loaded,
    /// A new version took over a route.
    Swapped,
    /// A version was refused (the previous one, if any, kept serving).
    Refused,
    /// A route's file was removed.
    Removed,
    /// An executor died on its own.
    Crashed,
    /// A call passed its deadline; its executor was killed.
    Timeout,
}

impl EventKind {
    /// Its name in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Loaded => "loaded",
            EventKind::Swapped => "swapped",
            EventKind::Refused => "refused",
            EventKind::Removed => "removed",
            EventKind::Crashed => "crashed",
            EventKind::Timeout => "timeout",
        }
    }
}

/// One event.
#[derive(Clone, Debug)]
pub struct Event {
    /// When.
    pub at: SystemTime,
    /// What.
    pub kind: EventKind,
    /// Which route.
    pub route: String,
    /// One sentence (the log line's gist).
    pub text: String,
}

/// The last [`KEPT`] events, oldest first.
#[derive(Debug, Default)]
pub struct Events(VecDeque<Event>);

impl Events {
    /// Records an event now.
    pub fn push(&mut self, kind: EventKind, route: &str, text: impl Into<String>) {
        if self.0.len() == KEPT {
            self.0.pop_front();
        }
        self.0.push_back(Event {
            at: SystemTime::now(),
            kind,
            route: route.to_owned(),
            text: text.into(),
        });
    }

    /// The events kept, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &Event> {
        self.0.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_keeps_the_last_ones() {
        let mut events = Events::default();
        for i in 0..KEPT + 5 {
            events.push(EventKind::Crashed, "r", format!("{i}"));
        }
        assert_eq!(events.iter().count(), KEPT);
        assert_eq!(events.iter().next().map(|e| e.text.as_str()), Some("5"));
    }
}
