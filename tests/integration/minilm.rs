//! The `minilm` plugin, as a plugin with files: a folder holding `libminilm.so`, its `env`, its
//! `settings` and a tiny random BERT made at test time in the real one's files and format
//! (`plugins/minilm/export-onnx --tiny-random`; nothing is downloaded). Served vectors are checked
//! against the independent numpy reference (`bench/minilm_reference.py`), batches against one by
//! one, and the limits, truncation and swaps of the folder as one unit; the Python program
//! `plugins/minilm-py` serves the same API and vectors from the same tiny model.
//!
//! Needs `python3` with numpy, onnx, onnxruntime, tokenizers and fastapi (`.ci/run` installs them):
//! ONNX Runtime's shared library is the one the `onnxruntime` package ships.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;

use crate::support::*;

/// The repository's root (the integration suite is built from `host/`).
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ has a parent")
        .to_path_buf()
}

/// `python3 -c code`'s trimmed stdout; panics with what to install when it fails.
fn python(args: &[&str]) -> String {
    let out = Command::new("python3")
        .args(args)
        .output()
        .expect("python3 runs (the minilm tests need it)");
    assert!(
        out.status.success(),
        "python3 {args:?} failed (the minilm tests need numpy, onnx, onnxruntime and \
         tokenizers: pip install them): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// ONNX Runtime's shared library, from the `onnxruntime` Python package.
fn onnxruntime_library() -> &'static str {
    static LIBRARY: OnceLock<String> = OnceLock::new();
    LIBRARY.get_or_init(|| {
        python(&[
            "-c",
            "import glob, os, onnxruntime; d = os.path.join(os.path.dirname(onnxruntime.__file__), \
             'capi'); print(sorted(glob.glob(os.path.join(d, 'libonnxruntime.so*')))[-1])",
        ])
    })
}

/// The tiny random BERT, made once per run (config.json, tokenizer.json, model.safetensors,
/// model.onnx).
fn tiny_model() -> &'static Path {
    static MODEL: OnceLock<PathBuf> = OnceLock::new();
    MODEL.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("minilm-tiny-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let script = repo().join("plugins/minilm/export-onnx");
        python(&[
            script.to_str().expect("a UTF-8 path"),
            "--tiny-random",
            dir.to_str().expect("a UTF-8 path"),
        ]);
        dir
    })
}

/// Lays out `plugins/minilm/` as fetch-model would: the library, the model, `env` (with
/// `extra_env` lines) and, when given, `settings`.
fn lay_out(plugins: &Path, extra_env: &str, settings: Option<&str>) -> PathBuf {
    let folder = plugins.join("minilm");
    let model = folder.join("model");
    fs::create_dir_all(&model).expect("mkdir");
    for file in [
        "config.json",
        "tokenizer.json",
        "model.safetensors",
        "model.onnx",
    ] {
        fs::copy(tiny_model().join(file), model.join(file)).expect("copy the tiny model");
    }
    fs::copy(plugin_library("minilm"), folder.join("libminilm.so")).expect("copy the library");
    fs::write(
        folder.join("env"),
        format!(
            "ORT_DYLIB_PATH={}\nMINILM_MODEL=model/model.onnx\nMINILM_THREADS=1\n{extra_env}",
            onnxruntime_library()
        ),
    )
    .expect("write env");
    if let Some(settings) = settings {
        fs::write(folder.join("settings"), settings).expect("write settings");
    }
    folder
}

fn start(args: &[&str], extra_env: &str, settings: Option<&str>) -> Server {
    start_with(&[], args, extra_env, settings)
}

/// Like `start`, with these workspace plugins beside it.
fn start_with(
    libraries: &[&str],
    args: &[&str],
    extra_env: &str,
    settings: Option<&str>,
) -> Server {
    let mut server = Server::start_with(Scheme::Http, libraries, args, |plugins| {
        lay_out(plugins, extra_env, settings);
    });
    server.wait_for_log("as /minilm:", START_DEADLINE);
    server
}

fn json(response: &Response) -> Value {
    serde_json::from_slice(&response.body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", response.text()))
}

fn embeddings(server: &Server, body: &str) -> Value {
    let response = server.post("/minilm/v1/embeddings", body.as_bytes());
    assert_eq!(response.status, 200, "{}", response.text());
    json(&response)
}

fn vector(value: &Value) -> Vec<f64> {
    value
        .as_array()
        .expect("an array")
        .iter()
        .map(|x| x.as_f64().expect("a number"))
        .collect()
}

/// The largest difference between two vectors' components.
fn largest_difference(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

fn vectors(answer: &Value) -> Vec<Vec<f64>> {
    answer["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|d| vector(&d["embedding"]))
        .collect()
}

#[test]
fn a_plugin_folder_answers_openai_embeddings_that_match_the_numpy_reference() {
    let server = start(&[], "", None);
    let answer = embeddings(&server, r#"{"input":["a crab","a market"],"model":"x"}"#);
    assert_eq!(answer["object"], "list");
    assert_eq!(answer["model"], "all-MiniLM-L6-v2");
    let got = vectors(&answer);
    assert_eq!(got.len(), 2);
    for (i, v) in got.iter().enumerate() {
        assert_eq!(answer["data"][i]["index"], i);
        assert_eq!(v.len(), 32, "the tiny model's hidden size");
        let norm: f64 = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "a unit vector, not {norm}");
    }
    // [CLS] a crab [SEP] + [CLS] a market [SEP]
    assert_eq!(answer["usage"]["prompt_tokens"], 8);
    // The reference: plain numpy from the same model.safetensors, nothing of the plugin's.
    let url = format!("http://{}/minilm/v1/embeddings", server.addr);
    let reference = repo().join("bench/minilm_reference.py");
    let model = server.plugins_dir.join("minilm/model");
    let out = Command::new("python3")
        .arg(&reference)
        .arg(&model)
        .args(["--url", &url, "--min-cosine", "0.999"])
        .output()
        .expect("run the reference");
    assert!(
        out.status.success(),
        "the served vectors differ from the reference:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_batch_answers_what_each_input_answers_alone() {
    let server = start(&[], "", None);
    let texts = [
        "a crab",
        "the fiddler walks into the big red market with a small dog",
        "sun",
        "the city road is slow and the car is fast",
    ];
    let list = texts
        .iter()
        .map(|t| format!("\"{t}\""))
        .collect::<Vec<_>>()
        .join(",");
    let together = vectors(&embeddings(&server, &format!("{{\"input\":[{list}]}}")));
    for (text, batched) in texts.iter().zip(&together) {
        let alone = vectors(&embeddings(&server, &format!("{{\"input\":\"{text}\"}}")));
        let worst = largest_difference(&alone[0], batched);
        assert!(
            worst < 1e-5,
            "{text:?}: padding changed the vector by {worst}"
        );
    }
    // The plain route answers the same vector for a text body.
    let plain = server.post("/minilm", texts[0].as_bytes());
    assert_eq!(plain.status, 200, "{}", plain.text());
    let plain = vector(&json(&plain)["embedding"]);
    let worst = largest_difference(&plain, &together[0]);
    assert!(worst < 1e-5, "plain and OpenAI routes differ by {worst}");
}

#[test]
fn base64_answers_are_the_same_floats() {
    let server = start(&[], "", None);
    let floats = vectors(&embeddings(&server, r#"{"input":"a crab"}"#));
    let encoded = embeddings(&server, r#"{"input":"a crab","encoding_format":"base64"}"#);
    let text = encoded["data"][0]["embedding"]
        .as_str()
        .expect("a base64 string");
    let decoded = python(&[
        "-c",
        "import base64, struct, sys; b = base64.b64decode(sys.argv[1]); \
         print(' '.join(repr(x) for x in struct.unpack('<%df' % (len(b) // 4), b)))",
        text,
    ]);
    let decoded: Vec<f64> = decoded
        .split(' ')
        .map(|x| x.parse().expect("a float"))
        .collect();
    assert_eq!(decoded.len(), floats[0].len());
    for (a, b) in decoded.iter().zip(&floats[0]) {
        assert!((a - b).abs() < 1e-6, "{a} != {b}");
    }
}

#[test]
fn inputs_past_the_window_are_cut_and_usage_says_so() {
    let server = start(&[], "", None);
    let long = vec!["crab"; 600].join(" ");
    let answer = embeddings(&server, &format!("{{\"input\":[\"{long}\",\"a crab\"]}}"));
    assert_eq!(answer["usage"]["truncated_inputs"], 1);
    // 256 for the long one, 4 for "[CLS] a crab [SEP]".
    assert_eq!(answer["usage"]["prompt_tokens"], 256 + 4);
}

#[test]
fn bad_requests_get_a_4xx_naming_the_problem_and_the_executor_lives() {
    let server = start(&[], "", None);
    let pids = executor_pids(&server, "minilm");
    let many = format!("{{\"input\":[{}]}}", vec!["\"a\""; 257].join(","));
    let huge = format!("{{\"input\":\"{}\"}}", "a ".repeat(600 * 1024));
    let cases: &[(&str, u16, &str)] = &[
        (r#"{"input":[]}"#, 400, "empty list"),
        (r#"{"input":["a",7]}"#, 400, "is not a string"),
        (r#"{"input":"#, 400, "not valid JSON"),
        (r#"{"inputs":"a"}"#, 400, "is missing"),
        (&many, 400, "at most 256"),
        (&huge, 413, "1048576"),
    ];
    for (body, status, says) in cases {
        let response = server.post("/minilm/v1/embeddings", body.as_bytes());
        assert_eq!(response.status, *status, "{}", response.text());
        assert!(response.text().contains(says), "{}", response.text());
    }
    assert_eq!(server.get("/minilm/v1/models").status, 200);
    assert_eq!(executor_pids(&server, "minilm"), pids, "no executor died");
    embeddings(&server, r#"{"input":"still serving"}"#);
}

#[test]
fn the_folder_is_one_version_a_change_to_its_env_swaps_it() {
    let mut server = start(&[], "MINILM_MODEL_NAME=first\n", None);
    assert_eq!(embeddings(&server, r#"{"input":"a"}"#)["model"], "first");
    let env = server.plugins_dir.join("minilm/env");
    let text = fs::read_to_string(&env).expect("read env");
    fs::write(&env, text.replace("=first", "=second")).expect("write env");
    server.wait_for_log("generation 2", IO_DEADLINE);
    wait_until("the new version to serve", IO_DEADLINE, || {
        (embeddings(&server, r#"{"input":"a"}"#)["model"] == "second").then_some(())
    });
}

#[test]
fn a_folders_settings_win_over_the_plugins_own_limits() {
    let server = start(&[], "", Some("max_body=1K\ndeadline=5000\n"));
    let body = format!("{{\"input\":\"{}\"}}", "a ".repeat(1024));
    let response = server.post("/minilm/v1/embeddings", body.as_bytes());
    assert_eq!(response.status, 413, "{}", response.text());
    let plugins = server.get("/-/plugins").text();
    assert!(plugins.contains("\"deadline_ms\":5000"), "{plugins}");
}

#[test]
fn a_folder_without_its_runtime_is_refused_with_the_reason() {
    let mut server = Server::start_with(Scheme::Http, &["echo"], &[], |plugins| {
        let folder = lay_out(plugins, "", None);
        fs::write(folder.join("env"), "MINILM_MODEL=model/model.onnx\n").expect("write env");
    });
    server.wait_for_log("ORT_DYLIB_PATH is not set", START_DEADLINE);
    assert_eq!(
        server.post("/echo", b"the rest serve").text(),
        "the rest serve"
    );
    assert_eq!(server.post("/minilm", b"a").status, 404);
}

#[test]
fn a_folder_with_two_libraries_is_refused_naming_them() {
    let mut server = Server::start_with(Scheme::Http, &["echo"], &[], |plugins| {
        let folder = lay_out(plugins, "", None);
        fs::copy(plugin_library("echo"), folder.join("libother.so")).expect("copy");
    });
    server.wait_for_log(
        "holds 2 libraries (libminilm.so, libother.so)",
        START_DEADLINE,
    );
    assert_eq!(server.post("/echo", b"x").text(), "x");
}

#[test]
fn under_the_yellow_light_queued_requests_are_answered_as_one_batch_each_its_own() {
    // Yellow runs half of --lanes-max: one lane, held by the crash fixture's gated call, so
    // the requests queue behind it and leave the queue as batches.
    let args = [
        "--mode",
        "jellyfish",
        "--light",
        "yellow",
        "--lanes-max",
        "2",
        "--queue-wait",
        "3600000",
    ];
    let server = start_with(&["crash"], &args, "", None);
    let texts: Vec<String> = (0..12)
        .map(|i| format!("the crab number {i} walks"))
        .collect();
    let alone: Vec<Vec<f64>> = texts
        .iter()
        .map(|t| vectors(&embeddings(&server, &format!("{{\"input\":\"{t}\"}}")))[0].clone())
        .collect();
    let (gate, mut held) = server.hold_lane("/crash");
    let mut queued: Vec<Client> = texts
        .iter()
        .map(|t| {
            let body = format!("{{\"input\":\"{t}\"}}");
            let mut client = server.connect();
            let head = format!(
                "POST /minilm/v1/embeddings HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            client.write_all((head + &body).as_bytes()).expect("send");
            client
        })
        .collect();
    server.wait_queued(texts.len());
    gate.open();
    assert!(read_response(&mut held).is_some_and(|r| r.status == 200));
    for (client, expected) in queued.iter_mut().zip(&alone) {
        let response = read_response(client).expect("an answer");
        assert_eq!(response.status, 200, "{}", response.text());
        let got = vector(&json(&response)["data"][0]["embedding"]);
        let worst = largest_difference(&got, expected);
        assert!(
            worst < 1e-5,
            "a batched answer went to the wrong client ({worst})"
        );
    }
    assert!(server.metric("fiddler_plugin_batches_total{plugin=\"minilm\"}") >= 1);
}

#[test]
fn the_python_program_answers_the_same_api_with_the_same_vectors() {
    let mut server = Server::start_with(Scheme::Http, &[], &[], |plugins| {
        lay_out(plugins, "", None);
        let program = plugins.join("minilm-py");
        fs::create_dir_all(&program).expect("mkdir");
        for file in ["serve", "app.py"] {
            fs::copy(
                repo().join("plugins/minilm-py").join(file),
                program.join(file),
            )
            .expect("copy the program");
        }
        // The model outside the plugins folder, where fetch-model keeps it: a program's
        // sandbox opens what its env names, never another plugin's folder.
        fs::write(
            program.join("env"),
            format!(
                "MINILM_MODEL_DIR={}\nMINILM_ONNX=model.onnx\nMINILM_THREADS=1\n",
                tiny_model().display()
            ),
        )
        .expect("write env");
    });
    server.wait_for_log("as /minilm:", START_DEADLINE);
    server.wait_for_log("as /minilm-py:", START_DEADLINE);
    let body = r#"{"input":["a crab","the fiddler walks into the market"]}"#;
    let native = vectors(&embeddings(&server, body));
    let response = server.post("/minilm-py/v1/embeddings", body.as_bytes());
    assert_eq!(response.status, 200, "{}", response.text());
    let answer = json(&response);
    assert_eq!(
        answer["usage"]["prompt_tokens"],
        embeddings(&server, body)["usage"]["prompt_tokens"]
    );
    for (a, b) in vectors(&answer).iter().zip(&native) {
        let worst = largest_difference(a, b);
        assert!(worst < 1e-5, "the program and the plugin differ by {worst}");
    }
    let refused = server.post("/minilm-py/v1/embeddings", br#"{"input":[]}"#);
    assert_eq!(refused.status, 400, "{}", refused.text());
}
