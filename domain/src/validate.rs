//! Small field checks shared by the aggregates.
use crate::code::Code;
use crate::DomainError;

/// Trims `value` and checks its length in characters.
pub(crate) fn text(
    field: &'static str,
    code: Code,
    value: &str,
    max_chars: usize,
) -> Result<String, DomainError> {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Err(DomainError::new(code, format!("{field} must not be empty")));
    }
    let chars = trimmed.chars().count();
    if chars > max_chars {
        return Err(DomainError::new(
            code,
            format!("{field} is {chars} characters long; at most {max_chars} are allowed"),
        ));
    }
    Ok(trimmed.to_string())
}

/// Like [`text`] but an absent or blank value is `None`.
pub(crate) fn optional_text(
    field: &'static str,
    code: Code,
    value: Option<&str>,
    max_chars: usize,
) -> Result<Option<String>, DomainError> {
    match value.map(str::trim) {
        None | Some("") => Ok(None),
        Some(v) => text(field, code, v, max_chars).map(Some),
    }
}

pub(crate) fn identifier(field: &'static str, value: &str) -> Result<String, DomainError> {
    let v = text(field, Code::InvalidIdentifier, value, 200)?;
    if v.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(DomainError::new(
            Code::InvalidIdentifier,
            format!("{field} must not contain white space or control characters"),
        ));
    }
    Ok(v)
}

pub(crate) fn http_url(field: &'static str, value: &str) -> Result<String, DomainError> {
    let v = text(field, Code::InvalidLocation, value, 2000)?;
    let rest = v
        .strip_prefix("https://")
        .or_else(|| v.strip_prefix("http://"));
    match rest {
        Some(host)
            if !host.is_empty() && !host.starts_with('/') && !v.contains(char::is_whitespace) =>
        {
            Ok(v)
        }
        _ => Err(DomainError::new(
            Code::InvalidLocation,
            format!("{field} must be an http(s) URL"),
        )),
    }
}
