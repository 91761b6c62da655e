//! Example plugin `embed`: embeds the posted text with a small two-layer model and answers
//! the label it is closest to, with its score, in JSON. It takes batches.
//!
//! Shows `handle_batch`: under load (the jellyfish's yellow light), the server hands it up to
//! `MAX_BATCH` queued requests in one call, and it computes their embeddings in one matrix
//! product, reading the 8 MiB weight matrix (more than a core's cache holds) once per batch
//! instead of once per request.
//!
//! The model is built at `init`: hashed character trigrams (sparse) feed a dense hidden layer of
//! `HIDDEN` units (ReLU), projected by a `HIDDEN` x `OUT` matrix of fixed pseudo-random weights
//! (a random projection: similar texts stay close). Each label's embedding is the mean of its
//! example sentences'. `POST /embed` with text answers `{"label":..,"score":..}`.
//! Corners cut: the weights are random, not trained, so the labels only reflect shared
//! trigrams; there is no tokenizer.

use plugin_api::{export_plugin, Error, JsonObject, OrStatus, Plugin, Request, Response};

/// Buckets of hashed trigrams, units of the hidden layer, size of an embedding.
const BUCKETS: usize = 1024;
const HIDDEN: usize = 2048;
const OUT: usize = 1024;

/// Labels and the sentences that stand for them.
const LABELS: &[(&str, &[&str])] = &[
    (
        "weather",
        &[
            "rain and wind tomorrow",
            "a sunny warm afternoon",
            "snow storm and cold",
        ],
    ),
    (
        "food",
        &[
            "bake the bread and slice it",
            "a spicy soup with rice",
            "cheese and fresh fruit",
        ],
    ),
    (
        "computers",
        &[
            "the server crashed again",
            "compile the code and run tests",
            "memory and cpu load",
        ],
    ),
    (
        "sport",
        &[
            "the team scored a late goal",
            "a long run before the race",
            "tennis match point",
        ],
    ),
];

/// The model and the labels' embeddings.
pub struct Embed {
    /// `BUCKETS` x `HIDDEN`, row by bucket (a sparse input reads only its buckets' rows).
    first: Vec<f32>,
    /// `HIDDEN` x `OUT`, row-major: the dense layer batching pays off on.
    second: Vec<f32>,
    labels: Vec<(&'static str, Vec<f32>)>,
}

impl Plugin for Embed {
    const DESCRIPTION: &'static str = "scores text against labels with a small embedding model";
    const MAX_BODY: Option<u64> = Some(64 * 1024);
    // Stateless per call, and cheap to run twice at once.
    const MAX_LANES: usize = 8;
    const MAX_BATCH: usize = 32;

    fn init() -> Result<Self, String> {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut weights = |n: usize, scale: f32| -> Vec<f32> {
            (0..n)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    ((seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * scale
                })
                .collect()
        };
        let first = weights(BUCKETS * HIDDEN, 1.0);
        let second = weights(HIDDEN * OUT, 2.0 / (HIDDEN as f32).sqrt());
        let mut model = Embed {
            first,
            second,
            labels: Vec::new(),
        };
        for (label, examples) in LABELS {
            let embedded = model.embed_all(examples);
            let mut mean = vec![0.0; OUT];
            for e in &embedded {
                mean.iter_mut().zip(e).for_each(|(m, x)| *m += x);
            }
            normalize(&mut mean);
            model.labels.push((label, mean));
        }
        Ok(model)
    }

    fn try_handle(&self, request: Request) -> Result<Response, Error> {
        let text = request.body_str().or_status(400, "post UTF-8 text")?;
        let embedding = self
            .embed_all(&[text])
            .pop()
            .or_status(500, "no embedding")?;
        Ok(self.answer(&embedding))
    }

    fn handle_batch(&self, requests: Vec<Request>) -> Vec<Response> {
        let texts: Vec<Option<&str>> = requests.iter().map(|r| r.body_str()).collect();
        let valid: Vec<&str> = texts.iter().flatten().copied().collect();
        let mut embedded = self.embed_all(&valid).into_iter();
        texts
            .iter()
            .map(|text| match text.and_then(|_| embedded.next()) {
                Some(embedding) => self.answer(&embedding),
                None => Error::new(400, "post UTF-8 text").into_response(),
            })
            .collect()
    }
}

export_plugin!(Embed);

impl Embed {
    /// The embeddings of `texts`, computed together: one pass over the dense layer's weights
    /// for the whole batch.
    fn embed_all(&self, texts: &[&str]) -> Vec<Vec<f32>> {
        let hidden: Vec<Vec<f32>> = texts.iter().map(|t| self.hidden(t)).collect();
        let mut out = vec![vec![0.0f32; OUT]; texts.len()];
        // For each weight row, update every text's output: the row is read once per batch.
        for (k, row) in self.second.chunks_exact(OUT).enumerate() {
            for (h, o) in hidden.iter().zip(out.iter_mut()) {
                let x = h[k];
                if x != 0.0 {
                    o.iter_mut().zip(row).for_each(|(o, w)| *o += x * w);
                }
            }
        }
        out.iter_mut().for_each(|o| normalize(o));
        out
    }

    /// The hidden layer for one text: the sum of its trigrams' rows, through ReLU.
    fn hidden(&self, text: &str) -> Vec<f32> {
        let mut h = vec![0.0f32; HIDDEN];
        let lower: Vec<char> = text.to_lowercase().chars().collect();
        for gram in lower.windows(3) {
            let bucket = fnv1a(gram) % BUCKETS;
            let row = &self.first[bucket * HIDDEN..(bucket + 1) * HIDDEN];
            h.iter_mut().zip(row).for_each(|(h, w)| *h += w);
        }
        h.iter_mut().for_each(|x| *x = x.max(0.0));
        h
    }

    fn answer(&self, embedding: &[f32]) -> Response {
        let (label, score) = self
            .labels
            .iter()
            .map(|(label, e)| (*label, dot(e, embedding)))
            .fold(("none", f32::MIN), |best, next| {
                if next.1 > best.1 {
                    next
                } else {
                    best
                }
            });
        let json = JsonObject::new()
            .string("label", label)
            .number("score", (f64::from(score) * 1000.0).round() / 1000.0);
        Response::json(json.finish())
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn normalize(v: &mut [f32]) {
    let norm = dot(v, v).sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

fn fnv1a(chars: &[char]) -> usize {
    let hash = chars.iter().fold(0xcbf2_9ce4_8422_2325u64, |hash, &c| {
        (hash ^ u64::from(c)).wrapping_mul(0x0100_0000_01b3)
    });
    hash as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use plugin_api::testing;

    #[test]
    fn a_batch_answers_what_single_calls_answer_in_order() {
        let model = testing::init::<Embed>().expect("init");
        let texts = ["the server crashed", "warm sunny day", "slice the bread"];
        let single: Vec<String> = texts
            .iter()
            .map(|t| {
                let r = testing::call(&model, Request::new("POST", "/").with_body(*t));
                r.body_str().unwrap_or_default().to_owned()
            })
            .collect();
        let mut requests: Vec<Request> = texts
            .iter()
            .map(|t| Request::new("POST", "/").with_body(*t))
            .collect();
        requests.insert(1, Request::new("POST", "/").with_body(vec![0xff]));
        let batch = model.handle_batch(requests);
        assert_eq!(batch.len(), 4);
        assert_eq!(batch[1].status, 400);
        let batched: Vec<String> = [&batch[0], &batch[2], &batch[3]]
            .iter()
            .map(|r| r.body_str().unwrap_or_default().to_owned())
            .collect();
        assert_eq!(single, batched);
        assert!(
            single[0].contains("\"label\":\"computers\""),
            "{}",
            single[0]
        );
    }
}
