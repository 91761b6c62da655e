//! Example plugin `sentiment`: the intended heavy-endpoint shape, in miniature. `init` loads a
//! "model" once per version (here a word lexicon parsed from text; in real life weights from a
//! file), every call reads it through `&self`, and answers are JSON.
//!
//! - `POST /sentiment` with text: `{"score":1.5,"label":"positive","matched":[["good",1.0],...]}`
//! - `GET /sentiment/model`: what is loaded (entries, load time in ms).
//!
//! Corners cut: the lexicon is tiny and built in; no negation handling; the JSON is written by
//! hand (no serde in a plugin this small).

use std::collections::HashMap;
use std::fmt::Write;
use std::time::Instant;

use plugin_api::{export_plugin, json_string, JsonObject, Plugin, Request, Response};

/// word, score: the "weights".
const LEXICON: &str = "good 1\ngreat 2\nexcellent 3\nhappy 2\nlove 3\nfast 1\nreliable 2\n\
bad -1\nawful -3\nterrible -3\nsad -2\nhate -3\nslow -1\nbroken -2\ncrash -2";

/// The loaded model.
pub struct Sentiment {
    weights: HashMap<String, f64>,
    load_ms: f64,
}

impl Sentiment {
    fn load(text: &str) -> Result<Sentiment, String> {
        let started = Instant::now();
        let mut weights = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let (word, score) = line
                .split_once(' ')
                .ok_or_else(|| format!("lexicon line {} has no score", n + 1))?;
            let score: f64 = score
                .trim()
                .parse()
                .map_err(|_| format!("lexicon line {} has a bad score", n + 1))?;
            weights.insert(word.to_owned(), score);
        }
        Ok(Sentiment {
            weights,
            load_ms: started.elapsed().as_secs_f64() * 1000.0,
        })
    }

    fn score(&self, text: &str) -> String {
        let mut total = 0.0;
        let mut matched = String::new();
        for word in text
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
        {
            if let Some(weight) = self.weights.get(&word.to_lowercase()) {
                total += weight;
                let comma = if matched.is_empty() { "" } else { "," };
                let word = json_string(&word.to_lowercase());
                let _ = write!(matched, "{comma}[{word},{weight:.1}]");
            }
        }
        let label = match total {
            t if t > 0.0 => "positive",
            t if t < 0.0 => "negative",
            _ => "neutral",
        };
        let json = JsonObject::new()
            .raw("score", &format!("{total:.1}"))
            .string("label", label)
            .raw("matched", &format!("[{matched}]"))
            .finish();
        json + "\n"
    }
}

impl Plugin for Sentiment {
    const DESCRIPTION: &'static str = "scores posted text with a lexicon loaded at init";
    // The lexicon is read-only: several executors may serve at once.
    const MAX_LANES: usize = 64;
    const DEADLINE_MS: Option<u64> = Some(2_000);
    const MAX_BODY: Option<u64> = Some(1 << 20);

    fn init() -> Result<Self, String> {
        Sentiment::load(LEXICON)
    }

    fn handle(&self, request: Request) -> Response {
        match (request.method.as_str(), request.path.as_str()) {
            ("GET", "/model") => Response::json(
                JsonObject::new()
                    .number("entries", self.weights.len() as f64)
                    .raw("load_ms", &format!("{:.3}", self.load_ms))
                    .finish()
                    + "\n",
            ),
            ("POST", "/") => match request.body_str() {
                Some(text) => Response::json(self.score(text)),
                None => Response::bad_request("post UTF-8 text\n"),
            },
            _ => Response::not_found("POST / with text, or GET /model\n"),
        }
    }
}

export_plugin!(Sentiment);

#[cfg(test)]
mod tests {
    use super::*;
    use plugin_api::testing;

    #[test]
    fn scores_text_with_the_loaded_lexicon() {
        let model = testing::init::<Sentiment>().expect("the lexicon loads");
        let response = testing::call(
            &model,
            Request::new("POST", "/").with_body("Great, but slow."),
        );
        assert_eq!(
            response.body_str(),
            Some("{\"score\":1.0,\"label\":\"positive\",\"matched\":[[\"great\",2.0],[\"slow\",-1.0]]}\n")
        );
        let info = testing::call(&model, Request::new("GET", "/model"));
        assert!(info
            .body_str()
            .unwrap_or_default()
            .starts_with("{\"entries\":15,"));
    }

    #[test]
    fn a_broken_lexicon_fails_init_with_a_reason() {
        assert_eq!(
            Sentiment::load("good").err(),
            Some("lexicon line 1 has no score".to_owned())
        );
    }
}
