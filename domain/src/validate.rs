//! Small field checks shared by the aggregates.
use crate::code::Code;
use crate::DomainError;

/// Checks `value`'s length in characters as sent (the limit the API document states), then
/// trims it; blank is empty.
pub(crate) fn text(
    field: &'static str,
    code: Code,
    value: &str,
    max_chars: usize,
) -> Result<String, DomainError> {
    let trimmed = value.trim();
    no_nul(field, code, trimmed)?;
    if trimmed.is_empty() {
        return Err(DomainError::new(code, format!("{field} must not be empty")));
    }
    let chars = value.chars().count();
    if chars > max_chars {
        return Err(DomainError::new(
            code,
            format!("{field} is {chars} characters long; at most {max_chars} are allowed"),
        ));
    }
    Ok(trimmed.to_string())
}

/// NUL cannot be stored (Postgres text and jsonb refuse it): a request carrying one is the
/// caller's to fix, never a failed insert.
pub(crate) fn no_nul(field: &str, code: Code, value: &str) -> Result<(), DomainError> {
    if value.contains('\0') {
        return Err(DomainError::new(
            code,
            format!("{field} must not contain NUL characters"),
        ));
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_trimmed_bounded_and_free_of_nul() {
        assert_eq!(
            text("name", Code::InvalidName, "  Acme ", 10).unwrap(),
            "Acme"
        );
        for bad in ["", "   ", "a\0b", "elevenchars", " ten chars  "] {
            let err = text("name", Code::InvalidName, bad, 10).unwrap_err();
            assert_eq!(err.code, Code::InvalidName, "{bad:?}");
        }
        assert!(optional_text("comment", Code::InvalidComment, Some("x\0"), 10).is_err());
        assert_eq!(
            optional_text("comment", Code::InvalidComment, Some("  "), 10).unwrap(),
            None
        );
    }
}
