//! HTTP/1.1 as bytes in and bytes out: no sockets here (intake and conn do the IO).
//!
//! `parse` turns a request head into a [`parse::Head`], `body` decodes a body framed by
//! `Content-Length` or `chunked`, `response` writes a response head, and `error` names every way
//! a request is refused together with its status code. `stream` drives the two parsers over a
//! stream without a socket (for the property tests and the fuzz target).

pub mod body;
pub mod error;
pub mod parse;
pub mod response;
pub mod stream;

#[cfg(test)]
mod props;
