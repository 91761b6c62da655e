//! Example plugin `wordcount`: counts the words of the posted text, with state built at load.
//!
//! Shows `init` and a fallible handler (`try_handle`, `?` answering 400): the state (a stop-word set standing in for a model, and a running total) is
//! built once per loaded version and shared by every call. A swapped-in version starts from a
//! fresh `init`, so its running total starts at zero again.
//!
//! `POST /wordcount?top=N` answers JSON: the word count, the distinct words, the N most frequent
//! words that are not stop words, and the words seen by this version so far.
//! Corners cut: words are split on anything that is not alphanumeric or `'`; there is no stemming.

use std::collections::{HashMap, HashSet};
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use plugin_api::{export_plugin, Error, OrStatus, Plugin, Request, Response};

const STOP_WORDS: &str =
    "a an and are as at be but by for from has have he her his i in is it its \
    of on or she that the their they this to was we were will with you your";

/// What `init` builds once per loaded version.
pub struct WordCount {
    /// Words left out of the ranking (the "model" loaded at start).
    stop_words: HashSet<&'static str>,
    /// Words counted by this version since it was loaded, across all calls.
    seen: AtomicU64,
}

impl Plugin for WordCount {
    const DESCRIPTION: &'static str = "counts words; ?top=N lists the most frequent";
    // Each executor keeps its own running total; safe to run several.
    const MAX_LANES: usize = 64;
    const MAX_BODY: Option<u64> = Some(4 * 1024 * 1024);

    fn init() -> Result<Self, String> {
        Ok(WordCount {
            stop_words: STOP_WORDS.split_whitespace().collect(),
            seen: AtomicU64::new(0),
        })
    }

    fn try_handle(&self, request: Request) -> Result<Response, Error> {
        let text = request
            .body_str()
            .or_status(400, "the body must be UTF-8 text")?;
        let top = match request.query_param("top") {
            None => 5,
            Some(n) => n
                .parse::<usize>()
                .ok()
                .filter(|n| *n <= 100)
                .or_status(400, "top must be a number from 0 to 100")?,
        };
        let mut counts: HashMap<String, u64> = HashMap::new();
        let mut words = 0u64;
        for word in text
            .split(|c: char| !(c.is_alphanumeric() || c == '\''))
            .filter(|w| !w.is_empty())
        {
            words += 1;
            *counts.entry(word.to_lowercase()).or_insert(0) += 1;
        }
        let seen = self.seen.fetch_add(words, Ordering::Relaxed) + words;
        let mut ranked: Vec<(&String, &u64)> = counts
            .iter()
            .filter(|(word, _)| !self.stop_words.contains(word.as_str()))
            .collect();
        ranked.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let mut json = format!(
            "{{\"words\":{words},\"distinct\":{},\"top\":[",
            counts.len()
        );
        for (i, (word, count)) in ranked.iter().take(top).enumerate() {
            let comma = if i == 0 { "" } else { "," };
            // Words hold only alphanumerics and `'`, so they need no JSON escaping.
            let _ = write!(json, "{comma}[\"{word}\",{count}]");
        }
        let _ = write!(json, "],\"seen_by_this_version\":{seen}}}");
        Ok(Response::json(json))
    }
}

export_plugin!(WordCount);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_words_and_keeps_a_running_total() {
        let plugin = WordCount::init().expect("init builds the state");
        let request = Request::new("POST", "/?top=2").with_body("The crab, the CRAB and a fiddler");
        let response = plugin.handle(request);
        assert_eq!(
            response.body_str(),
            Some(
                r#"{"words":7,"distinct":5,"top":[["crab",2],["fiddler",1]],"seen_by_this_version":7}"#
            )
        );
        let again = plugin.handle(Request::new("POST", "/?top=0").with_body("one two"));
        assert!(again
            .body_str()
            .unwrap_or_default()
            .ends_with("\"seen_by_this_version\":9}"));
    }

    #[test]
    fn refuses_a_bad_top() {
        let plugin = WordCount::init().expect("init builds the state");
        let response = plugin.handle(Request::new("POST", "/?top=x").with_body("a"));
        assert_eq!(response.status, 400);
    }
}
