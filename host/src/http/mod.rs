//! HTTP/1.1 as bytes in and bytes out: no sockets here (intake and conn do the IO).
//!
//! `parse` turns a request head into a [`parse::Head`], `body` decodes a body framed by
//! `Content-Length` or `chunked`, `response` writes a response head, and `error` names every way
//! a request is refused together with its status code.

pub mod body;
pub mod error;
pub mod parse;
pub mod response;
