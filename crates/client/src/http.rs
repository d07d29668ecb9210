//! The HTTP plumbing the API clients share: base URLs, sending, and turning a failed response
//! into a [`ClientError::Status`] with the server's problem+json `code` and `detail`.

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::ClientError;

/// Longest excerpt of a non-JSON error body kept in an error message.
const BODY_EXCERPT_CHARS: usize = 200;

/// Checks an `http://` or `https://` base URL and drops its trailing slashes.
pub(crate) fn base_url(url: &str) -> Result<String, ClientError> {
    let invalid = |reason: String| ClientError::InvalidUrl {
        url: url.to_owned(),
        reason,
    };
    let parsed = reqwest::Url::parse(url).map_err(|e| invalid(e.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(invalid(format!(
            "the scheme must be http or https, got {}",
            parsed.scheme()
        )));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(invalid("a base URL has no query or fragment".into()));
    }
    Ok(url.trim_end_matches('/').to_owned())
}

/// Sends a request; a transport failure becomes [`ClientError::Http`].
pub(crate) async fn send(
    request: reqwest::RequestBuilder,
    url: &str,
) -> Result<reqwest::Response, ClientError> {
    request.send().await.map_err(|source| ClientError::Http {
        url: url.to_owned(),
        source,
    })
}

/// Reads a whole success body; a failure mid-body is a transport failure.
pub(crate) async fn body(
    response: reqwest::Response,
    url: &str,
) -> Result<bytes::Bytes, ClientError> {
    response.bytes().await.map_err(|source| ClientError::Http {
        url: url.to_owned(),
        source,
    })
}

/// Reads and parses a JSON success body.
pub(crate) async fn json<T: DeserializeOwned>(
    response: reqwest::Response,
    url: &str,
) -> Result<T, ClientError> {
    let bytes = body(response, url).await?;
    serde_json::from_slice(&bytes).map_err(|e| ClientError::UnexpectedResponse {
        url: url.to_owned(),
        reason: format!("the body is not the expected JSON: {e}"),
    })
}

/// The error for a non-success response, with the problem+json `code` and `detail` when the
/// body is one, else an excerpt of the body.
pub(crate) async fn status_error(response: reqwest::Response, url: &str) -> ClientError {
    #[derive(Deserialize)]
    struct Problem {
        code: Option<String>,
        detail: Option<String>,
        title: Option<String>,
    }
    let status = response.status().as_u16();
    let body = response.bytes().await.unwrap_or_default();
    let (code, message) = match serde_json::from_slice::<Problem>(&body) {
        Ok(problem) => (
            problem.code,
            problem.detail.or(problem.title).unwrap_or_default(),
        ),
        Err(_) => (
            None,
            String::from_utf8_lossy(&body)
                .trim()
                .chars()
                .take(BODY_EXCERPT_CHARS)
                .collect(),
        ),
    };
    ClientError::Status {
        url: url.to_owned(),
        status,
        code,
        message,
    }
}
