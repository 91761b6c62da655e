//! Every way the HTTP layer refuses a request, each with its status code.

use std::fmt;

/// Why a request was refused before it reached a plugin. Each is answered with its
/// [`status`](HttpError::status) and the connection is closed afterwards, since after a framing
/// error the rest of the stream cannot be trusted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HttpError {
    /// The request line is longer than its limit (414).
    UriTooLong,
    /// The header block is larger than its limit, or has too many fields (431).
    HeadersTooLarge,
    /// The body is larger than the limit (413), known from `Content-Length` or while decoding;
    /// the limit (the route's own, or the server's) is said, so a client knows what fits.
    BodyTooLarge { limit: usize },
    /// Malformed syntax or ambiguous framing (400); the text says which rule.
    BadRequest(&'static str),
    /// A method or transfer coding this server does not implement (501).
    NotImplemented(&'static str),
    /// An HTTP version other than 1.0 and 1.1 (505).
    VersionNotSupported,
    /// An `Expect` other than `100-continue` (417).
    ExpectationFailed,
    /// The client stopped before the request head was complete, past its deadline (408).
    Timeout,
    /// The server could not hold the body it was reading (its memory file could not grow):
    /// 503, the client may try again.
    NoRoom,
}

impl HttpError {
    /// The status code this refusal is answered with.
    pub fn status(self) -> u16 {
        match self {
            HttpError::UriTooLong => 414,
            HttpError::HeadersTooLarge => 431,
            HttpError::BodyTooLarge { .. } => 413,
            HttpError::BadRequest(_) => 400,
            HttpError::NotImplemented(_) => 501,
            HttpError::VersionNotSupported => 505,
            HttpError::ExpectationFailed => 417,
            HttpError::Timeout => 408,
            HttpError::NoRoom => 503,
        }
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::UriTooLong => f.write_str("request line too long"),
            HttpError::HeadersTooLarge => f.write_str("request header block too large"),
            HttpError::BodyTooLarge { limit } => {
                write!(f, "request body too large (at most {limit} bytes here)")
            }
            HttpError::BadRequest(why) => write!(f, "bad request: {why}"),
            HttpError::NotImplemented(what) => write!(f, "not implemented: {what}"),
            HttpError::VersionNotSupported => f.write_str("HTTP version not supported"),
            HttpError::ExpectationFailed => f.write_str("only Expect: 100-continue is supported"),
            HttpError::Timeout => f.write_str("request not complete before its deadline"),
            HttpError::NoRoom => f.write_str("no room to hold the request body now"),
        }
    }
}

impl std::error::Error for HttpError {}
