//! HTTP/1.1 as bytes in and bytes out: no sockets here (intake and conn do the IO).
//!
//! `parse` turns a request head into a [`parse::Head`], `body` decodes a body framed by
//! `Content-Length` or `chunked`, `reader` is the one request reader over both (a connection
//! pumps its socket into it; the property tests and the fuzz target drive it too), `convert`
//! turns a parsed head into the plugin's request, `response`
//! writes a response head, and `error` names every way a request is refused together with its
//! status code.

pub mod body;
pub mod convert;
pub mod error;
pub mod parse;
pub mod reader;
pub mod response;

#[cfg(test)]
mod props;
