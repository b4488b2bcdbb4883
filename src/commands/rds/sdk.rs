//! Crossing the SDK boundary: times to and from the SDK's own type, and SDK failures to
//! [`ExecError`] (the API's code, message and request id, or a transport failure whose
//! outcome is unknown), with anything that looks like a credential redacted.

use std::sync::LazyLock;

use aws_sdk_rds::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_rds::operation::RequestId;
use aws_sdk_rds::primitives::DateTime as AwsTime;
use chrono::{DateTime, SecondsFormat, Utc};
use regex::Regex;

use crate::commands::ExecError;

pub(super) fn to_aws(t: DateTime<Utc>) -> AwsTime {
    AwsTime::from_secs_and_nanos(t.timestamp(), t.timestamp_subsec_nanos())
}

pub(super) fn to_chrono(t: &AwsTime) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(t.secs(), t.subsec_nanos())
}

pub(super) fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

pub(super) fn owned(s: Option<&str>) -> Option<String> {
    s.map(str::to_owned)
}

/// Maps an SDK failure: an API answer becomes [`ExecError::Api`] (code, message, request
/// id); no answer (dispatch, timeout, IO, unreadable response) becomes
/// [`ExecError::Transport`]. Messages are redacted.
pub(super) fn sdk_error<E>(err: SdkError<E>) -> ExecError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let request_id = owned(err.request_id());
    match &err {
        SdkError::ServiceError(service) => {
            let code = service
                .err()
                .code()
                .map_or_else(|| format!("HTTP {}", service.raw().status()), str::to_owned);
            ExecError::Api {
                code,
                message: redact(service.err().message().unwrap_or_default()),
                request_id,
            }
        }
        SdkError::ConstructionFailure(_) => ExecError::Transport(format!(
            "request not sent: {}",
            redact(&DisplayErrorContext(&err).to_string())
        )),
        _ => ExecError::Transport(redact(&DisplayErrorContext(&err).to_string())),
    }
}

/// Removes anything that looks like a credential: access key ids, signatures, tokens.
fn redact(text: &str) -> String {
    static PATTERNS: LazyLock<[Regex; 2]> = LazyLock::new(|| {
        [
            Regex::new(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b").expect("valid regex"),
            Regex::new(r"(?i)\b(signature|credential|x-amz-security-token|secret[_-]?access[_-]?key|session[_-]?token)([=:]\s*)[^\s,&]+")
                .expect("valid regex"),
        ]
    });
    let text = PATTERNS[0].replace_all(text, "[redacted]");
    PATTERNS[1]
        .replace_all(&text, "$1$2[redacted]")
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_keys_and_signatures() {
        let out = redact("key AKIAABCDEFGHIJKLMNOP Signature=abc123, X-Amz-Security-Token=tok&x=1");
        assert!(
            !out.contains("AKIAABCDEFGHIJKLMNOP")
                && !out.contains("abc123")
                && !out.contains("tok"),
            "{out}"
        );
    }
}
