//! The HTTP side: OpenAI's embeddings API (`POST /v1/embeddings`, `GET /v1/models`) and a plain
//! one (`POST /` with a text body answers one vector), read from requests and written as JSON.
//! Every limit is checked here, before the model sees anything; the model is `model`'s.

use std::fmt::Write;

use plugin_api::{Request, Response};
use serde_json::Value;

use crate::model::Embedded;

/// The most inputs one request may carry (OpenAI's own limit is 2048; this one keeps a single
/// request inside a deadline on two cores).
pub const MAX_INPUTS: usize = 256;
/// The largest body, in bytes, unless the folder's settings say otherwise (the server refuses
/// larger ones with 413 before reading them).
pub const MAX_BODY: u64 = 1 << 20;

/// What a request asks for.
pub enum Ask {
    /// Embeddings of these texts, answered OpenAI's way.
    Embeddings {
        /// The texts, in order.
        texts: Vec<String>,
        /// `encoding_format: "base64"`: each vector as base64 of little-endian `f32`s (what
        /// the official `openai` client asks for by default).
        base64: bool,
    },
    /// One text, answered with its vector alone.
    Plain(String),
    /// An answer needing no model (the model list, a client's mistake).
    Answer(Response),
}

/// An error answered in OpenAI's shape: `{"error":{"message":..,"type":..}}`.
pub fn error(status: u16, message: &str) -> Response {
    let kind = match status {
        401 => "authentication_error",
        404 => "not_found_error",
        500.. => "server_error",
        _ => "invalid_request_error",
    };
    let mut body = String::from("{\"error\":{\"message\":");
    body.push_str(&plugin_api::json_string(message));
    let _ = write!(
        body,
        ",\"type\":\"{kind}\",\"param\":null,\"code\":null}}}}"
    );
    let mut response = Response::json(body);
    response.status = status;
    response
}

/// Reads what `request` asks for.
pub fn read(request: &Request, model_name: &str) -> Ask {
    let path = request.path.as_str().trim_end_matches('/');
    let method = request.method.as_str();
    match (method, path) {
        ("POST", "/v1/embeddings" | "/embeddings") => match embeddings(request) {
            Ok(ask) => ask,
            Err(answer) => Ask::Answer(answer),
        },
        ("GET", "/v1/models" | "/models") => Ask::Answer(models(model_name)),
        ("POST", "") => match request.body_str() {
            Some(text) if !text.is_empty() => Ask::Plain(text.to_owned()),
            Some(_) => Ask::Answer(error(400, "post the text to embed as the body")),
            None => Ask::Answer(error(400, "the body is not UTF-8 text")),
        },
        (_, "/v1/embeddings" | "/embeddings" | "") => Ask::Answer(error(
            405,
            &format!("{method} is not served here: POST the text"),
        )),
        _ => Ask::Answer(error(
            404,
            &format!(
                "no route {path:?}: POST /v1/embeddings (OpenAI's API), GET /v1/models, or \
                 POST / with a text"
            ),
        )),
    }
}

/// An OpenAI embeddings request's texts and format, or the 4xx it deserves.
fn embeddings(request: &Request) -> Result<Ask, Response> {
    // The body's size is the server's to refuse (413 before it is read), at the route's
    // limit: MAX_BODY, or what the folder's settings say instead.
    let body: Value = serde_json::from_slice(&request.body)
        .map_err(|e| error(400, &format!("the body is not valid JSON: {e}")))?;
    let Value::Object(fields) = body else {
        return Err(error(
            400,
            "the body must be a JSON object with an \"input\"",
        ));
    };
    let texts = match fields.get("input") {
        None => return Err(error(400, "\"input\" is missing")),
        Some(Value::String(text)) => vec![text.clone()],
        Some(Value::Array(items)) => {
            if items.is_empty() {
                return Err(error(400, "\"input\" is an empty list"));
            }
            if items.len() > MAX_INPUTS {
                return Err(error(
                    400,
                    &format!(
                        "\"input\" has {} items: at most {MAX_INPUTS} in one request",
                        items.len()
                    ),
                ));
            }
            items
                .iter()
                .enumerate()
                .map(|(i, item)| match item {
                    Value::String(text) => Ok(text.clone()),
                    _ => Err(error(
                        400,
                        &format!(
                            "\"input\"[{i}] is not a string (token arrays are not taken: send \
                             the text)"
                        ),
                    )),
                })
                .collect::<Result<_, _>>()?
        }
        Some(_) => {
            return Err(error(
                400,
                "\"input\" must be a string or a list of strings",
            ))
        }
    };
    if let Some(i) = texts.iter().position(|t| t.is_empty()) {
        return Err(error(400, &format!("\"input\"[{i}] is an empty string")));
    }
    let base64 = match fields.get("encoding_format") {
        None | Some(Value::Null) => false,
        Some(Value::String(f)) if f == "float" => false,
        Some(Value::String(f)) if f == "base64" => true,
        Some(other) => {
            return Err(error(
                400,
                &format!("\"encoding_format\" is float or base64, not {other}"),
            ))
        }
    };
    Ok(Ask::Embeddings { texts, base64 })
}

/// `GET /v1/models`: the one model served.
fn models(model_name: &str) -> Response {
    let name = plugin_api::json_string(model_name);
    Response::json(format!(
        "{{\"object\":\"list\",\"data\":[{{\"id\":{name},\"object\":\"model\",\"created\":0,\
         \"owned_by\":\"fiddler-crab\"}}]}}"
    ))
}

/// OpenAI's answer for `embedded`, in the order asked.
pub fn embeddings_answer(embedded: &[Embedded], base64: bool, model_name: &str) -> Response {
    let dims = embedded.first().map_or(0, |e| e.vector.len());
    let mut body = String::with_capacity(64 + embedded.len() * (dims * 12 + 64));
    body.push_str("{\"object\":\"list\",\"data\":[");
    for (index, e) in embedded.iter().enumerate() {
        if index > 0 {
            body.push(',');
        }
        let _ = write!(
            body,
            "{{\"object\":\"embedding\",\"index\":{index},\"embedding\":"
        );
        if base64 {
            body.push('"');
            base64_f32(&e.vector, &mut body);
            body.push('"');
        } else {
            floats(&e.vector, &mut body);
        }
        body.push('}');
    }
    let tokens: usize = embedded.iter().map(|e| e.tokens).sum();
    let truncated = embedded.iter().filter(|e| e.truncated).count();
    let _ = write!(
        body,
        "],\"model\":{},\"usage\":{{\"prompt_tokens\":{tokens},\"total_tokens\":{tokens},\
         \"truncated_inputs\":{truncated}}}}}",
        plugin_api::json_string(model_name)
    );
    Response::json(body)
}

/// The plain answer: one vector, its token count, whether it was cut.
pub fn plain_answer(e: &Embedded) -> Response {
    let mut body = String::with_capacity(e.vector.len() * 12 + 64);
    body.push_str("{\"embedding\":");
    floats(&e.vector, &mut body);
    let _ = write!(
        body,
        ",\"tokens\":{},\"truncated\":{}}}",
        e.tokens, e.truncated
    );
    Response::json(body)
}

/// `[x, y, ...]`, each the shortest decimal that reads back as the same `f32`.
fn floats(values: &[f32], out: &mut String) {
    out.push('[');
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        if v.is_finite() {
            let _ = write!(out, "{v}");
        } else {
            out.push('0');
        }
    }
    out.push(']');
}

/// Standard base64 (with padding) of the values' little-endian bytes.
fn base64_f32(values: &[f32], out: &mut String) {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn post(path: &str, body: &str) -> Request {
        Request::new("POST", path).with_body(body.as_bytes().to_vec())
    }

    fn status_of(ask: Ask) -> (u16, String) {
        match ask {
            Ask::Answer(r) => (r.status, r.body_str().unwrap_or("").to_owned()),
            Ask::Embeddings { texts, .. } => (0, texts.join("|")),
            Ask::Plain(t) => (1, t),
        }
    }

    #[test]
    fn requests_are_read_or_refused_naming_the_problem() {
        let cases: &[(&str, &str, u16, &str)] = &[
            ("/v1/embeddings", r#"{"input":"a crab"}"#, 0, "a crab"),
            (
                "/v1/embeddings",
                r#"{"input":["a","b"],"model":"x"}"#,
                0,
                "a|b",
            ),
            ("/v1/embeddings", r#"{"input":[]}"#, 400, "empty list"),
            (
                "/v1/embeddings",
                r#"{"input":["a",3]}"#,
                400,
                "[1] is not a string",
            ),
            (
                "/v1/embeddings",
                r#"{"input":[[1,2]]}"#,
                400,
                "token arrays",
            ),
            ("/v1/embeddings", r#"{"input":""}"#, 400, "empty string"),
            ("/v1/embeddings", r#"{"model":"x"}"#, 400, "missing"),
            ("/v1/embeddings", r#"{"input":"a""#, 400, "not valid JSON"),
            ("/v1/embeddings", r#"[1]"#, 400, "JSON object"),
            (
                "/v1/embeddings",
                r#"{"input":"a","encoding_format":"hex"}"#,
                400,
                "float or base64",
            ),
            ("/", "plain text", 1, "plain text"),
            ("/", "", 400, "post the text"),
            ("/elsewhere", "x", 404, "no route"),
        ];
        for &(path, body, status, contains) in cases {
            let (got, text) = status_of(read(&post(path, body), "m"));
            assert_eq!(got, status, "{path} {body}: {text}");
            assert!(text.contains(contains), "{path} {body}: {text}");
        }
        let many = format!(
            "{{\"input\":[{}]}}",
            vec!["\"a\""; MAX_INPUTS + 1].join(",")
        );
        let (status, text) = status_of(read(&post("/v1/embeddings", &many), "m"));
        assert_eq!(status, 400);
        assert!(text.contains(&format!("at most {MAX_INPUTS}")), "{text}");
    }

    #[test]
    fn base64_is_the_little_endian_bytes() {
        let mut out = String::new();
        base64_f32(&[1.0, -2.5], &mut out);
        // 1.0 = 00 00 80 3f, -2.5 = 00 00 20 c0
        assert_eq!(out, "AACAPwAAIMA=");
    }

    #[test]
    fn answers_are_openai_shaped() {
        let e = Embedded {
            vector: vec![0.6, 0.8],
            tokens: 4,
            truncated: true,
        };
        let body = embeddings_answer(&[e], false, "m");
        let v: Value = serde_json::from_slice(&body.body).expect("JSON");
        assert_eq!(v["object"], "list");
        // The shortest decimal that reads back as the same f32.
        assert_eq!(
            v["data"][0]["embedding"][1].as_f64().map(|x| x as f32),
            Some(0.8f32)
        );
        assert_eq!(v["usage"]["prompt_tokens"], 4);
        assert_eq!(v["usage"]["truncated_inputs"], 1);
        let refused = error(413, "too big");
        let v: Value = serde_json::from_slice(&refused.body).expect("JSON");
        assert_eq!(v["error"]["message"], "too big");
    }
}
