//! Example plugin `tokens`: generates text one token at a time and streams each token to the
//! client as it is made, the way a language model's answer arrives.
//!
//! Shows a streamed answer ([`Stream`]), a fallible handler (`?` with [`OrStatus`]) and the
//! call's deadline ([`Request::deadline`]). The "model" is a word-bigram chain built at `init`
//! from a small built-in text; the prompt's last known word starts the chain, and the prompt
//! seeds the choices, so the same prompt gives the same text.
//!
//! `POST /tokens?n=40&pace_ms=20&format=sse` with a prompt as the body: `n` tokens (at most
//! 2000), one every `pace_ms` (at most 1000; 20 by default, standing in for a model's work),
//! as plain text or as server-sent events (`data: <token>` per event, then `event: end`). It
//! stops early, and says so, when its deadline is about to pass, rather than being cut off.
//! Corners cut: a toy model; tokens are words; no sampling temperature.

use std::collections::HashMap;
use std::time::Duration;

use plugin_api::{export_plugin, Error, OrStatus, Plugin, Request, Response, Stream};

/// What the chain learns from.
const CORPUS: &str = "the crab walks sideways along the shore and the tide comes in slowly \
    the crab waits for the tide to turn and the shore grows quiet at night \
    a server that never falls over answers every request in turn \
    the queue grows when the tide of requests comes in and the server answers them in order \
    a model loads once and answers many requests while the crab keeps the shore";

/// The longest pause between tokens a client may ask for, and the most tokens.
const MAX_PACE: Duration = Duration::from_millis(1000);
const MAX_TOKENS: usize = 2000;

/// The chain: each word, and the words seen after it.
pub struct Tokens {
    next: HashMap<&'static str, Vec<&'static str>>,
}

impl Plugin for Tokens {
    const DESCRIPTION: &'static str = "generates text token by token, streamed as it is made";
    // A toy model: cheap to hold in several executors.
    const MAX_LANES: usize = 64;
    const DEADLINE_MS: Option<u64> = Some(60_000);

    fn init() -> Result<Self, String> {
        let words: Vec<&str> = CORPUS.split_whitespace().collect();
        let mut next: HashMap<&str, Vec<&str>> = HashMap::new();
        for pair in words.windows(2) {
            next.entry(pair[0]).or_default().push(pair[1]);
        }
        Ok(Tokens { next })
    }

    fn try_handle(&self, request: Request) -> Result<Response, Error> {
        let count = match request.query_param("n") {
            Some(n) => n.parse::<usize>().or_status(400, "n must be a number")?,
            None => 40,
        }
        .min(MAX_TOKENS);
        let pace = match request.query_param("pace_ms") {
            Some(ms) => {
                Duration::from_millis(ms.parse().or_status(400, "pace_ms must be a number")?)
            }
            None => Duration::from_millis(20),
        }
        .min(MAX_PACE);
        let sse = request.query_param("format") == Some("sse");
        let prompt = request
            .body_str()
            .or_status(400, "send the prompt as UTF-8 text")?;

        let content_type = if sse {
            "text/event-stream"
        } else {
            "text/plain; charset=utf-8"
        };
        let mut out = Stream::start(Response::status(200).with_content_type(content_type))?;
        let mut word = prompt
            .split_whitespace()
            .rev()
            .find(|w| self.next.contains_key(w.to_lowercase().as_str()))
            .map_or("the".to_owned(), str::to_lowercase);
        let mut seed = fnv1a(prompt.as_bytes());
        for i in 0..count {
            // Stop while there is time to say so (a server older than deadlines gives None).
            if request
                .deadline()
                .is_some_and(|left| left < pace + Duration::from_millis(100))
            {
                let note = "[stopped: deadline]";
                out.write(if sse {
                    format!("event: stopped\ndata: {note}\n\n")
                } else {
                    format!("\n{note}\n")
                })?;
                return out.finish();
            }
            std::thread::sleep(pace);
            let choices = self.next.get(word.as_str()).map_or(&[][..], Vec::as_slice);
            seed = xorshift(seed);
            word = match choices {
                [] => "the".to_owned(),
                _ => choices[(seed % choices.len() as u64) as usize].to_owned(),
            };
            let token = if i == 0 {
                word.clone()
            } else {
                format!(" {word}")
            };
            out.write(if sse {
                format!("data: {token}\n\n")
            } else {
                token
            })?;
        }
        out.write(if sse { "event: end\ndata: \n\n" } else { "\n" })?;
        out.finish()
    }
}

export_plugin!(Tokens);

/// A 64-bit FNV-1a hash: the prompt's seed.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// One step of xorshift64 (never zero for a non-zero input).
fn xorshift(mut x: u64) -> u64 {
    x |= 1;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}

#[cfg(test)]
mod tests {
    use super::*;
    use plugin_api::testing;

    fn generate(query: &str, prompt: &str) -> Response {
        let tokens = testing::init::<Tokens>().expect("init");
        testing::call(&tokens, Request::new("POST", query).with_body(prompt))
    }

    #[test]
    fn the_same_prompt_gives_the_same_tokens() {
        let a = generate("/?n=12&pace_ms=0", "the crab");
        let b = generate("/?n=12&pace_ms=0", "the crab");
        assert_eq!(a.status, 200);
        assert_eq!(a.body_str(), b.body_str());
        let text = a.body_str().unwrap_or_default();
        assert_eq!(text.split_whitespace().count(), 12, "{text:?}");
    }

    #[test]
    fn events_end_with_an_end_event_and_bad_input_is_400() {
        let events = generate("/?n=3&pace_ms=0&format=sse", "tide");
        let text = events.body_str().unwrap_or_default();
        assert_eq!(text.matches("data: ").count(), 4, "{text:?}");
        assert!(text.ends_with("event: end\ndata: \n\n"), "{text:?}");
        assert_eq!(events.header("content-type"), Some("text/event-stream"));
        assert_eq!(generate("/?n=lots", "x").status, 400);
        let not_text = testing::call(
            &testing::init::<Tokens>().expect("init"),
            Request::new("POST", "/").with_body(vec![0xff, 0xfe]),
        );
        assert_eq!(not_text.status, 400);
    }
}
