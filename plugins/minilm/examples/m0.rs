//! M0 of `bench/model`: the plugin's own time per input, in this process (no server): the
//! handler called directly through `plugin_api::testing`, as the executor would call it.
//!
//! Run with the folder's `env` in the environment and `FIDDLER_PLUGIN_DIR` set to the folder
//! (`bench/model` does): `cargo run --release -p minilm --example m0 -- TEXT [CALLS]`. Prints
//! `m0_ms_median ms_p99 batch16_ms_per_input`.

use std::time::Instant;

use plugin_api::{testing, Request};

fn main() {
    let mut args = std::env::args().skip(1);
    let text = args
        .next()
        .unwrap_or_else(|| "a crab walks into a market on a sunny day".to_owned());
    let calls: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(300);
    let plugin = match testing::init::<minilm::MiniLm>() {
        Ok(plugin) => plugin,
        Err(why) => {
            eprintln!("m0: init failed: {why}");
            std::process::exit(1);
        }
    };
    let one = format!("{{\"input\":{}}}", plugin_api::json_string(&text));
    let sixteen = format!(
        "{{\"input\":[{}]}}",
        vec![plugin_api::json_string(&text); 16].join(",")
    );
    let call = |body: &str| {
        let request = Request::new("POST", "/v1/embeddings").with_body(body.as_bytes().to_vec());
        let started = Instant::now();
        let response = testing::call(&plugin, request);
        assert_eq!(response.status, 200, "{:?}", response.body_str());
        started.elapsed().as_secs_f64() * 1000.0
    };
    for _ in 0..20 {
        call(&one);
    }
    let mut times: Vec<f64> = (0..calls).map(|_| call(&one)).collect();
    times.sort_by(f64::total_cmp);
    let batch: Vec<f64> = (0..calls / 10 + 3).map(|_| call(&sixteen) / 16.0).collect();
    let mut batch = batch;
    batch.sort_by(f64::total_cmp);
    println!(
        "{:.3} {:.3} {:.3}",
        times[times.len() / 2],
        times[times.len() * 99 / 100],
        batch[batch.len() / 2]
    );
}
