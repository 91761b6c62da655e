//! Example plugin `minilm`: sentence embeddings from all-MiniLM-L6-v2, a real model, behind
//! OpenAI's embeddings API (`POST /minilm/v1/embeddings`), so the official `openai` client and
//! whatever is built on it work unchanged with `base_url=http://HOST/minilm/v1`.
//!
//! Shows a plugin with files: it comes as the folder `plugins/minilm/` holding `libminilm.so`
//! beside its `env` (where the model and ONNX Runtime are) and `model/` (the weights and the
//! tokenizer), and it finds them without being rebuilt. The folder's `fetch-model` lays it out.
//! It also shows a heavy `init` (the model is loaded once per executor) and `handle_batch`:
//! under the jellyfish's yellow light the server hands it queued requests together and it runs
//! their inputs as padded batches, which costs less per input than one by one.
//!
//! Configuration (its `env`): `ORT_DYLIB_PATH` (required: ONNX Runtime's shared library, e.g.
//! the one the `onnxruntime` Python package ships), `MINILM_MODEL` (default
//! `model/model.onnx`), `MINILM_TOKENIZER` (default `tokenizer.json` beside the model),
//! `MINILM_MODEL_NAME` (the name answers carry), `MINILM_WINDOW` (tokens per input, 256),
//! `MINILM_THREADS` (ONNX Runtime threads per call; default one per core).
//!
//! Corners cut: token-array inputs (`input: [[101, 2023]]`) and `dimensions` are refused, not
//! served; the ONNX file must be an encoder with `input_ids` and `attention_mask` inputs.

mod api;
mod model;

use std::path::PathBuf;

use plugin_api::{export_plugin, plugin_path, Plugin, Request, Response};

use crate::api::Ask;
use crate::model::{Config, Model};

/// The loaded model and the name answers carry.
pub struct MiniLm {
    model: Model,
    name: String,
}

impl Plugin for MiniLm {
    const DESCRIPTION: &'static str =
        "sentence embeddings (all-MiniLM-L6-v2, OpenAI's /v1/embeddings API)";
    // 256 inputs of 256 tokens take about 10 s on two cores; one short sentence 4 ms.
    const DEADLINE_MS: Option<u64> = Some(30_000);
    const MAX_BODY: Option<u64> = Some(api::MAX_BODY);
    // One executor whose ONNX Runtime uses every core: the lowest latency (3.1 ms against
    // 5.3 ms) and one copy of the weights. Two lanes of one thread each served 385 req/s
    // against 284 at 16 clients (bench/model): a folder's `settings` (`max_lanes=2`) with
    // `MINILM_THREADS=1` in its `env` chooses that. Batches (MAX_BATCH) beat both.
    const MAX_LANES: usize = 1;
    const MAX_BATCH: usize = 32;

    fn init() -> Result<Self, String> {
        let var = |key: &str| std::env::var(key).ok().filter(|v| !v.is_empty());
        let runtime = var("ORT_DYLIB_PATH").ok_or(
            "ORT_DYLIB_PATH is not set: it names ONNX Runtime's libonnxruntime.so (the \
             folder's env says it; plugins/minilm/fetch-model writes it)",
        )?;
        let model = plugin_path(var("MINILM_MODEL").unwrap_or_else(|| "model/model.onnx".into()));
        let tokenizer = match var("MINILM_TOKENIZER") {
            Some(path) => plugin_path(path),
            None => model.parent().map_or_else(
                || PathBuf::from("tokenizer.json"),
                |dir| dir.join("tokenizer.json"),
            ),
        };
        let number = |key: &str, default: usize| match var(key) {
            None => Ok(default),
            Some(text) => text
                .parse::<usize>()
                .map_err(|_| format!("{key} takes a number, not {text:?}")),
        };
        let config = Config {
            runtime: PathBuf::from(runtime),
            model,
            tokenizer,
            window: number("MINILM_WINDOW", 256)?.clamp(2, 512),
            threads: number("MINILM_THREADS", 0)?,
            spin: number("MINILM_SPIN", 1)? != 0,
        };
        Ok(MiniLm {
            model: Model::load(&config)?,
            name: var("MINILM_MODEL_NAME").unwrap_or_else(|| "all-MiniLM-L6-v2".into()),
        })
    }

    fn handle(&self, request: Request) -> Response {
        self.handle_batch(vec![request])
            .pop()
            .unwrap_or_else(|| api::error(500, "no answer"))
    }

    /// Every input of every request goes through the model together (in length-sorted padded
    /// batches); each request gets its own answer back.
    fn handle_batch(&self, requests: Vec<Request>) -> Vec<Response> {
        let asks: Vec<Ask> = requests
            .iter()
            .map(|request| api::read(request, &self.name))
            .collect();
        let texts: Vec<&str> = asks
            .iter()
            .flat_map(|ask| match ask {
                Ask::Embeddings { texts, .. } => texts.iter().map(String::as_str).collect(),
                Ask::Plain(text) => vec![text.as_str()],
                Ask::Answer(_) => Vec::new(),
            })
            .collect();
        let embedded = match self.model.embed(&texts) {
            Ok(embedded) => embedded,
            Err(why) => {
                eprintln!("minilm: {why}");
                return asks
                    .into_iter()
                    .map(|ask| match ask {
                        Ask::Answer(answer) => answer,
                        _ => api::error(500, &why),
                    })
                    .collect();
            }
        };
        let mut embedded = embedded.as_slice();
        asks.into_iter()
            .map(|ask| match ask {
                Ask::Answer(answer) => answer,
                Ask::Plain(_) => {
                    let (one, rest) = embedded.split_at(1);
                    embedded = rest;
                    api::plain_answer(&one[0])
                }
                Ask::Embeddings { texts, base64 } => {
                    let (these, rest) = embedded.split_at(texts.len());
                    embedded = rest;
                    api::embeddings_answer(these, base64, &self.name)
                }
            })
            .collect()
    }
}

export_plugin!(MiniLm);
