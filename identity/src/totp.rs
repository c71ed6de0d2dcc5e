//! Time-based one-time passwords (RFC 6238 over RFC 4226: HMAC-SHA1, 30-second steps, six
//! digits: what every authenticator app reads from an `otpauth://` URL), and recovery codes.
//!
//! A code is accepted for the current step and one step either side (clock skew); the step a
//! code was accepted for is remembered by the caller so the same code cannot be used twice.
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha1::Sha1;

/// Seconds per step.
pub const STEP_SECS: u64 = 30;
/// Steps accepted either side of now.
pub const SKEW_STEPS: u64 = 1;
const DIGITS: u32 = 6;

/// A new 160-bit secret (RFC 4226 recommends at least 160 bits).
pub fn new_secret() -> Vec<u8> {
    let mut secret = vec![0u8; 20];
    rand::rngs::OsRng.fill_bytes(&mut secret);
    secret
}

/// The code of `step` (RFC 4226 dynamic truncation).
pub fn code_at(secret: &[u8], step: u64) -> String {
    #[allow(clippy::expect_used)]
    let mut mac = Hmac::<Sha1>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(&step.to_be_bytes());
    let digest = mac.finalize().into_bytes();
    let offset = usize::from(digest[19] & 0x0f);
    let binary = (u32::from(digest[offset]) & 0x7f) << 24
        | u32::from(digest[offset + 1]) << 16
        | u32::from(digest[offset + 2]) << 8
        | u32::from(digest[offset + 3]);
    format!(
        "{:0width$}",
        binary % 10u32.pow(DIGITS),
        width = DIGITS as usize
    )
}

/// The step of a moment (seconds since the epoch).
pub fn step_of(unix_secs: u64) -> u64 {
    unix_secs / STEP_SECS
}

/// The step `code` belongs to, within the skew window around `unix_secs`, if any. Steps not
/// after `used_up_to` are refused: a code is used once.
pub fn verify(secret: &[u8], code: &str, unix_secs: u64, used_up_to: u64) -> Option<u64> {
    let code = code.trim();
    if code.len() != DIGITS as usize || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let now = step_of(unix_secs);
    (now.saturating_sub(SKEW_STEPS)..=now + SKEW_STEPS)
        .filter(|step| *step > used_up_to)
        .find(|step| crate::secret::same(code_at(secret, *step).as_bytes(), code.as_bytes()))
}

/// RFC 4648 base32 without padding (what `otpauth://` URLs carry).
pub fn base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::new();
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &b in bytes {
        buffer = (buffer << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ALPHABET[((buffer >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((buffer << (5 - bits)) & 31) as usize]));
    }
    out
}

/// The enrolment URL an authenticator app reads (usually from a QR code).
pub fn otpauth_url(issuer: &str, account: &str, secret: &[u8]) -> String {
    let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    format!(
        "otpauth://totp/{}:{}?secret={}&issuer={}&algorithm=SHA1&digits={DIGITS}&period={STEP_SECS}",
        enc(issuer),
        enc(account),
        base32(secret),
        enc(issuer)
    )
}

/// Ten single-use recovery codes, `xxxxx-xxxxx` from an alphabet without look-alikes.
pub fn recovery_codes() -> Vec<String> {
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";
    (0..10)
        .map(|_| {
            let mut bytes = [0u8; 10];
            rand::rngs::OsRng.fill_bytes(&mut bytes);
            let chars: String = bytes
                .iter()
                .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
                .collect();
            format!("{}-{}", &chars[..5], &chars[5..])
        })
        .collect()
}

/// A recovery code as typed, normalised before hashing (case and spaces do not matter).
pub fn normalise_recovery_code(code: &str) -> String {
    code.chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    const RFC_SECRET: &[u8] = b"12345678901234567890";

    #[test]
    fn codes_match_rfc_6238_appendix_b() {
        // The RFC's 8-digit SHA-1 values, last six digits.
        for (time, expected) in [
            (59u64, "287082"),
            (1_111_111_109, "081804"),
            (1_234_567_890, "005924"),
            (2_000_000_000, "279037"),
        ] {
            assert_eq!(code_at(RFC_SECRET, step_of(time)), expected, "{time}");
        }
    }

    #[test]
    fn one_step_of_skew_is_accepted_and_a_used_step_is_not() {
        let now = 1_234_567_890;
        let previous = code_at(RFC_SECRET, step_of(now) - 1);
        assert_eq!(
            verify(RFC_SECRET, &previous, now, 0),
            Some(step_of(now) - 1)
        );
        let old = code_at(RFC_SECRET, step_of(now) - 2);
        assert_eq!(verify(RFC_SECRET, &old, now, 0), None);
        let current = code_at(RFC_SECRET, step_of(now));
        assert_eq!(verify(RFC_SECRET, &current, now, step_of(now)), None);
        assert_eq!(verify(RFC_SECRET, "12345", now, 0), None);
        assert_eq!(verify(RFC_SECRET, "abcdef", now, 0), None);
    }

    #[test]
    fn base32_matches_rfc_4648() {
        assert_eq!(base32(b"foobar"), "MZXW6YTBOI");
        assert_eq!(base32(b"f"), "MY");
        let url = otpauth_url("Answers", "alice@acme.com", b"foobar");
        assert!(url.starts_with("otpauth://totp/Answers:alice%40acme.com?secret=MZXW6YTBOI"));
    }

    #[test]
    fn recovery_codes_are_distinct_and_normalised() {
        let codes = recovery_codes();
        assert_eq!(codes.len(), 10);
        let unique: std::collections::BTreeSet<_> = codes.iter().collect();
        assert_eq!(unique.len(), 10);
        assert_eq!(normalise_recovery_code(" ABCDE-fghij "), "abcde-fghij");
    }
}
