//! The error a fallible handler returns: a status and a plain-text explanation for the
//! client, so `?` works inside [`Plugin::try_handle`](crate::Plugin::try_handle).

use std::fmt;

use crate::message::Response;

/// A request the handler gives up on: the status to answer and why, in plain text.
///
/// `?` turns any [`std::error::Error`] into a `500` carrying its message; say what the client
/// did wrong with [`Error::new`] or [`OrStatus::or_status`] (a `&str` or `Option` is not an
/// error `?` can convert: `.or_status(400, "...")?` is the way):
///
/// ```
/// use plugin_api::{Error, OrStatus, Request, Response};
///
/// fn handle(request: &Request) -> Result<Response, Error> {
///     let text = request.body_str().or_status(400, "send UTF-8 text")?;
///     let n: u32 = text.trim().parse()?; // not a number: 500 with the parse error
///     if n == 0 {
///         return Err(Error::new(422, "zero has no inverse"));
///     }
///     Ok(Response::text(format!("{}\n", 1.0 / f64::from(n))))
/// }
///
/// let answer = handle(&Request::new("POST", "/").with_body("4")).unwrap();
/// assert_eq!(answer.body_str(), Some("0.25\n"));
/// let refused = handle(&Request::new("POST", "/").with_body("0")).unwrap_err();
/// assert_eq!(refused.status(), 422);
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Error {
    status: u16,
    message: String,
}

impl Error {
    /// An error answered with `status` and `message` as its plain-text body.
    pub fn new(status: u16, message: impl Into<String>) -> Error {
        Error {
            status,
            message: message.into(),
        }
    }

    /// The status it is answered with.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The explanation it is answered with.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The response the client gets: the status, and the message as text (with a final
    /// newline, for terminals).
    pub fn into_response(self) -> Response {
        let mut body = self.message;
        if !body.ends_with('\n') {
            body.push('\n');
        }
        Response::error(self.status, body)
    }
}

/// Any standard error becomes a `500` with its message.
impl<E: std::error::Error> From<E> for Error {
    fn from(error: E) -> Error {
        Error::new(500, error.to_string())
    }
}

impl From<Error> for Response {
    fn from(error: Error) -> Response {
        error.into_response()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status, self.message)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Error({}, {:?})", self.status, self.message)
    }
}

/// `.or_status(400, "why")` on an `Option` or a `Result`: `None` or `Err` becomes an
/// [`Error`] with that status and explanation, for `?`.
pub trait OrStatus<T> {
    /// The value, or an [`Error`] answered with `status` and `why`.
    fn or_status(self, status: u16, why: impl Into<String>) -> Result<T, Error>;
}

impl<T> OrStatus<T> for Option<T> {
    fn or_status(self, status: u16, why: impl Into<String>) -> Result<T, Error> {
        self.ok_or_else(|| Error::new(status, why))
    }
}

impl<T, E> OrStatus<T> for Result<T, E> {
    fn or_status(self, status: u16, why: impl Into<String>) -> Result<T, Error> {
        self.map_err(|_| Error::new(status, why))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_errors_are_500_and_named_ones_keep_their_status() {
        let parsed: Result<u8, Error> = "x".parse::<u8>().map_err(Error::from);
        let error = parsed.unwrap_err();
        assert_eq!(error.status(), 500);
        assert_eq!(error.message(), "invalid digit found in string");
        let response = Error::new(404, "no such word").into_response();
        assert_eq!(response.status, 404);
        assert_eq!(response.body_str(), Some("no such word\n"));
        assert_eq!(
            None::<u8>.or_status(400, "empty").unwrap_err().status(),
            400
        );
        assert_eq!(Ok::<u8, ()>(7).or_status(400, "bad"), Ok(7));
    }
}
