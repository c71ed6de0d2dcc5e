//! Guardrails decide, before any engine sees a question, whether it may be sent at all.
//! Today one rule: a question that carries a payment card number is blocked, so card data
//! never leaves the platform.

/// A question a guardrail refuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The rule, a stable identifier.
    pub rule: &'static str,
    /// Why, for people.
    pub reason: &'static str,
}

/// The first guardrail the question breaks, if any.
pub fn check(question: &str) -> Option<Violation> {
    if contains_card_number(question) {
        return Some(Violation {
            rule: "payment_card_number",
            reason: "the question contains what looks like a payment card number",
        });
    }
    None
}

/// 13 to 19 digits, optionally grouped by single spaces or dashes, that pass the Luhn check.
fn contains_card_number(text: &str) -> bool {
    let chars: Vec<char> = text.chars().collect();
    let mut start = 0;
    while start < chars.len() {
        if !chars[start].is_ascii_digit() || (start > 0 && chars[start - 1].is_ascii_digit()) {
            start += 1;
            continue;
        }
        let mut digits = Vec::new();
        let mut i = start;
        while i < chars.len() {
            let c = chars[i];
            if c.is_ascii_digit() {
                digits.push(c as u8 - b'0');
                if (13..=19).contains(&digits.len()) && luhn(&digits) {
                    let next_is_digit = chars.get(i + 1).is_some_and(|c| c.is_ascii_digit());
                    if !next_is_digit {
                        return true;
                    }
                }
                if digits.len() > 19 {
                    break;
                }
            } else if (c == ' ' || c == '-') && chars.get(i + 1).is_some_and(|c| c.is_ascii_digit())
            {
                // a separator inside the number
            } else {
                break;
            }
            i += 1;
        }
        start = i.max(start + 1);
    }
    false
}

fn luhn(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let d = u32::from(d);
            if !i.is_multiple_of(2) {
                let doubled = d * 2;
                if doubled > 9 {
                    doubled - 9
                } else {
                    doubled
                }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_card_numbers_in_any_grouping() {
        assert!(check("my card is 4111 1111 1111 1111, why was it declined?").is_some());
        assert!(check("4111-1111-1111-1111").is_some());
        assert!(check("card:5500005555555559").is_some());
    }

    #[test]
    fn lets_ordinary_numbers_through() {
        assert!(check("How do I upgrade from 2.3.1 to 3.0?").is_none());
        assert!(check("order 4111 1111 1111 1112 is missing").is_none()); // fails Luhn
        assert!(check("call +1 555 0100").is_none());
        assert!(check("ticket 12345678901234567890123 failed").is_none()); // too long
    }
}
