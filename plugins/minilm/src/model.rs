//! The model: the tokenizer (the field's WordPiece, from the model's own `tokenizer.json`) and
//! a BERT encoder run by ONNX Runtime, then mean pooling over the attention mask and L2
//! normalisation (what sentence-transformers does for all-MiniLM-L6-v2). Texts in, unit
//! vectors out; what the HTTP side asks for is `api`'s.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use ort::value::Tensor;
use tokenizers::{Tokenizer, TruncationParams};

/// One text's embedding.
pub struct Embedded {
    /// The unit vector.
    pub vector: Vec<f32>,
    /// Tokens it was run with, `[CLS]` and `[SEP]` included.
    pub tokens: usize,
    /// It was longer than the window and was cut to it.
    pub truncated: bool,
}

/// Where the model's files are and how to run it.
pub struct Config {
    /// ONNX Runtime's shared library (`libonnxruntime.so`).
    pub runtime: PathBuf,
    /// The ONNX file: inputs `input_ids`, `attention_mask` (and `token_type_ids` if it has
    /// them); the first output is `[batch, sequence, hidden]` (pooled here) or `[batch, hidden]`.
    pub model: PathBuf,
    /// The tokenizer's `tokenizer.json`.
    pub tokenizer: PathBuf,
    /// Tokens per input, special ones included (longer inputs are cut, as sentence-transformers
    /// does: 256 for this model).
    pub window: usize,
    /// ONNX Runtime's threads for one call (0: its own choice, one per core).
    pub threads: usize,
    /// Whether its threads spin, waiting for work, after a call (they keep the cores busy
    /// between calls, which the server's own work then waits for).
    pub spin: bool,
}

/// At most this many padded tokens (inputs x longest input) go through the model at once: a
/// batch of long inputs is run in pieces, so its memory stays bounded.
const MAX_BATCH_TOKENS: usize = 4 * 1024;

/// A loaded model.
pub struct Model {
    /// `Session::run` takes `&mut`; calls come one at a time per executor, so the lock is
    /// never contended (it is what makes the state `Sync`).
    session: Mutex<Session>,
    tokenizer: Tokenizer,
    /// Whether the graph takes `token_type_ids` (BERT exports do; some others do not).
    token_types: bool,
}

impl Model {
    /// Loads the runtime, the tokenizer and the model.
    pub fn load(config: &Config) -> Result<Model, String> {
        let environment = ort::init_from(&config.runtime)
            .map_err(|e| {
                format!(
                    "cannot load ONNX Runtime from {}: {e}",
                    config.runtime.display()
                )
            })?
            .with_name("minilm")
            .build()
            .map_err(|e| format!("cannot start ONNX Runtime: {e}"))?;
        let mut tokenizer = Tokenizer::from_file(&config.tokenizer)
            .map_err(|e| format!("cannot read {}: {e}", config.tokenizer.display()))?;
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: config.window,
                ..TruncationParams::default()
            }))
            .map_err(|e| format!("cannot set the tokenizer's window: {e}"))?;
        let session = open(&environment, &config.model, config.threads, config.spin)
            .map_err(|e| format!("cannot load {}: {e}", config.model.display()))?;
        let names: Vec<&str> = session.inputs().iter().map(|i| i.name()).collect();
        for needed in ["input_ids", "attention_mask"] {
            if !names.contains(&needed) {
                return Err(format!(
                    "{} has no input {needed} (it has {names:?}): not a BERT-like encoder",
                    config.model.display()
                ));
            }
        }
        let token_types = names.contains(&"token_type_ids");
        Ok(Model {
            session: Mutex::new(session),
            tokenizer,
            token_types,
        })
    }

    /// Embeds `texts`, in their order. Inputs are run longest-first in padded batches of
    /// similar lengths (less padding), at most [`MAX_BATCH_TOKENS`] at once.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Embedded>, String> {
        let mut encoded = Vec::with_capacity(texts.len());
        for text in texts {
            let encoding = self
                .tokenizer
                .encode(*text, true)
                .map_err(|e| format!("cannot tokenize: {e}"))?;
            let truncated = !encoding.get_overflowing().is_empty();
            encoded.push((encoding.get_ids().to_vec(), truncated));
        }
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(encoded[i].0.len()));
        let mut out: Vec<Option<Embedded>> = (0..texts.len()).map(|_| None).collect();
        let mut start = 0;
        while start < order.len() {
            // Sorted longest first: the first input of a piece is its longest.
            let longest = encoded[order[start]].0.len().max(1);
            let fits = (MAX_BATCH_TOKENS / longest).max(1);
            let piece = &order[start..order.len().min(start + fits)];
            let ids: Vec<&[u32]> = piece.iter().map(|&i| encoded[i].0.as_slice()).collect();
            for (&i, vector) in piece.iter().zip(self.run(&ids)?) {
                out[i] = Some(Embedded {
                    vector,
                    tokens: encoded[i].0.len(),
                    truncated: encoded[i].1,
                });
            }
            start += piece.len();
        }
        out.into_iter()
            .map(|e| e.ok_or_else(|| "an input was not embedded".to_owned()))
            .collect()
    }

    /// One padded batch through the model: a unit vector per input.
    fn run(&self, inputs: &[&[u32]]) -> Result<Vec<Vec<f32>>, String> {
        let batch = inputs.len();
        let length = inputs.iter().map(|ids| ids.len()).max().unwrap_or(0).max(1);
        let mut ids = vec![0i64; batch * length];
        let mut mask = vec![0i64; batch * length];
        for (row, input) in inputs.iter().enumerate() {
            for (col, &id) in input.iter().enumerate() {
                ids[row * length + col] = i64::from(id);
                mask[row * length + col] = 1;
            }
        }
        let shape = [batch, length];
        let tensor = |data: Vec<i64>| {
            Tensor::from_array((shape, data)).map_err(|e| format!("cannot make a tensor: {e}"))
        };
        let mut feed = vec![
            ("input_ids", tensor(ids)?),
            ("attention_mask", tensor(mask.clone())?),
        ];
        if self.token_types {
            feed.push(("token_type_ids", tensor(vec![0i64; batch * length])?));
        }
        let mut session = self
            .session
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let outputs = session
            .run(feed)
            .map_err(|e| format!("the model failed: {e}"))?;
        let (dims, values) = outputs[0]
            .try_extract_tensor::<f32>()
            .map_err(|e| format!("the model's output is not float: {e}"))?;
        let dims: Vec<usize> = dims.iter().map(|&d| d.max(0) as usize).collect();
        match dims.as_slice() {
            // Hidden states: mean over the tokens the mask keeps.
            &[b, l, hidden] if b == batch && l == length && values.len() == b * l * hidden => {
                Ok((0..batch)
                    .map(|row| {
                        let mut sum = vec![0f32; hidden];
                        let mut kept = 0f32;
                        for col in 0..length {
                            if mask[row * length + col] == 0 {
                                continue;
                            }
                            kept += 1.0;
                            let at = (row * length + col) * hidden;
                            sum.iter_mut()
                                .zip(&values[at..at + hidden])
                                .for_each(|(s, v)| *s += v);
                        }
                        sum.iter_mut().for_each(|s| *s /= kept.max(1.0));
                        normalized(sum)
                    })
                    .collect())
            }
            // A graph that pools itself.
            &[b, hidden] if b == batch && values.len() == b * hidden => Ok(values
                .chunks_exact(hidden)
                .map(|row| normalized(row.to_vec()))
                .collect()),
            other => Err(format!(
                "the model answered shape {other:?} for a batch of {batch} x {length}"
            )),
        }
    }
}

/// An ONNX Runtime session for `model`, with every graph optimisation (it fuses LayerNorm,
/// GELU and attention).
fn open(
    environment: &ort::environment::Environment,
    model: &Path,
    threads: usize,
    spin: bool,
) -> ort::Result<Session> {
    let mut builder = Session::builder(environment)?
        .with_optimization_level(GraphOptimizationLevel::Level3)
        .map_err(ort::Error::<()>::from)?
        .with_intra_op_spinning(spin)
        .map_err(ort::Error::<()>::from)?;
    if threads > 0 {
        builder = builder
            .with_intra_threads(threads)
            .map_err(ort::Error::<()>::from)?;
    }
    builder.commit_from_file(model)
}

/// `v` scaled to length 1 (a zero vector stays zero).
fn normalized(mut v: Vec<f32>) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}
