//! What a question is after, and what it is about: a deterministic classifier, so analytics can
//! be recomputed from the events at any time and give the same answer (docs/analytics.md).
//!
//! Intents follow Kapa.ai's dashboards: Troubleshooting (something is broken), Guiding (how do
//! I...), Lookup (a fact), Off-Topic (nothing to do with the product), Other.

domain::text_enum! {
    /// What a question is after.
    pub enum Intent {
        Troubleshooting = "troubleshooting",
        Guiding = "guiding",
        Lookup = "lookup",
        OffTopic = "off_topic",
        Other = "other",
    }
}

const TROUBLESHOOTING: &[&str] = &[
    "error",
    "errors",
    "fail",
    "fails",
    "failed",
    "failing",
    "failure",
    "broken",
    "crash",
    "crashes",
    "crashed",
    "bug",
    "exception",
    "timeout",
    "timed out",
    "not working",
    "doesn't work",
    "does not work",
    "isn't working",
    "won't",
    "cannot",
    "can't",
    "unable",
    "denied",
    "forbidden",
    "stuck",
    "wrong",
    "missing",
    "500",
    "502",
    "503",
    "404",
    "401",
    "403",
    "problem",
    "issue",
    "declined",
];
const GUIDING: &[&str] = &[
    "how do i",
    "how to",
    "how can i",
    "how should i",
    "how would i",
    "steps to",
    "set up",
    "setup",
    "configure",
    "install",
    "integrate",
    "migrate",
    "enable",
    "disable",
    "connect",
    "create",
    "best way",
    "guide",
    "tutorial",
    "walk me through",
    "example of",
];
const LOOKUP: &[&str] = &[
    "what is",
    "what are",
    "what's",
    "which",
    "where is",
    "where are",
    "where can i find",
    "is there",
    "are there",
    "does",
    "do you",
    "when",
    "who",
    "pricing",
    "price",
    "cost",
    "limit",
    "limits",
    "version",
    "supported",
    "support for",
    "list of",
    "difference between",
    "default",
];
const OFF_TOPIC: &[&str] = &[
    "weather",
    "joke",
    "recipe",
    "football",
    "soccer",
    "movie",
    "poem",
    "song",
    "horoscope",
    "lottery",
    "who won",
    "your favorite",
    "tell me about yourself",
    "meaning of life",
];

/// Lower-case, punctuation to spaces (keeping apostrophes), single spaces, padded with a space on
/// both sides so phrase matches respect word boundaries.
fn padded(text: &str) -> String {
    let cleaned: String = text
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || c == '\'' {
                c
            } else {
                ' '
            }
        })
        .collect();
    format!(
        " {} ",
        cleaned.split_whitespace().collect::<Vec<_>>().join(" ")
    )
}

fn hits(text: &str, lexicon: &[&str]) -> usize {
    lexicon
        .iter()
        .filter(|phrase| text.contains(&format!(" {phrase} ")))
        .count()
}

/// Troubleshooting wins over Guiding over Lookup (a broken thing asked "how" is still broken);
/// Off-Topic only when no product intent matched at all.
pub fn classify(question: &str) -> Intent {
    let text = padded(question);
    if hits(&text, TROUBLESHOOTING) > 0 {
        Intent::Troubleshooting
    } else if hits(&text, GUIDING) > 0 {
        Intent::Guiding
    } else if hits(&text, OFF_TOPIC) > 0 {
        Intent::OffTopic
    } else if hits(&text, LOOKUP) > 0 {
        Intent::Lookup
    } else {
        Intent::Other
    }
}

const STOPWORDS: &[&str] = &[
    "the", "and", "for", "with", "that", "this", "from", "your", "have", "does", "what", "when",
    "where", "which", "there", "their", "about", "into", "how", "can", "you", "are", "was", "not",
    "but", "our", "my", "is", "it", "to", "of", "in", "on", "a", "an", "i", "do", "be", "or",
    "why", "who", "will", "would", "should", "could", "get", "use", "using", "need", "want",
];

/// The question as grouped for "top questions": lower case, no punctuation, single spaces.
pub fn normalize(question: &str) -> String {
    padded(question).trim().replace('\'', "")
}

/// The question's topic: the first path segment of the first cited source (`/export/csv` →
/// `export`), else its first keyword of four letters or more that is not a stop word.
pub fn topic(question: &str, cited_urls: &[String]) -> Option<String> {
    let from_source = cited_urls.iter().find_map(|url| {
        let rest = url.split_once("://").map_or(url.as_str(), |(_, r)| r);
        rest.split('/')
            .skip(1)
            .find(|s| !s.is_empty() && s.chars().any(char::is_alphabetic))
            .map(|s| s.split(['?', '#', '.']).next().unwrap_or(s).to_lowercase())
    });
    from_source.or_else(|| {
        normalize(question)
            .split(' ')
            .find(|w| {
                w.chars().count() >= 4
                    && !STOPWORDS.contains(w)
                    && !w.chars().all(|c| c.is_ascii_digit())
            })
            .map(str::to_string)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Labelled examples; the classifier must get every one right.
    const LABELLED: &[(&str, Intent)] = &[
        (
            "Export to CSV fails with error 500",
            Intent::Troubleshooting,
        ),
        (
            "My SSO login is not working since yesterday",
            Intent::Troubleshooting,
        ),
        ("Why was my card declined?", Intent::Troubleshooting),
        (
            "The webhook times out, I get a timeout after 30s",
            Intent::Troubleshooting,
        ),
        ("I can't see the billing page", Intent::Troubleshooting),
        (
            "How do I fix the 403 when calling the API?",
            Intent::Troubleshooting,
        ),
        ("How do I export my data to CSV?", Intent::Guiding),
        ("How to configure SAML with Okta", Intent::Guiding),
        ("Walk me through connecting Slack", Intent::Guiding),
        ("What's the best way to migrate from v1?", Intent::Guiding),
        ("Set up a Zendesk integration", Intent::Guiding),
        (
            "Can you show an example of a webhook payload",
            Intent::Guiding,
        ),
        ("What is the rate limit of the API?", Intent::Lookup),
        ("Which regions are supported?", Intent::Lookup),
        ("Is there a Python SDK", Intent::Lookup),
        ("Pricing for the enterprise plan", Intent::Lookup),
        ("Where can I find my invoices", Intent::Lookup),
        (
            "What's the difference between admin and operator roles",
            Intent::Lookup,
        ),
        ("What's the weather in Paris today?", Intent::OffTopic),
        ("Tell me a joke", Intent::OffTopic),
        ("Who won the football match yesterday", Intent::OffTopic),
        ("Write me a poem about cats", Intent::OffTopic),
        ("hello", Intent::Other),
        ("Quarterly report", Intent::Other),
        ("thanks!", Intent::Other),
    ];

    #[test]
    fn classifies_every_labelled_example() {
        for (question, expected) in LABELLED {
            assert_eq!(classify(question), *expected, "{question}");
        }
    }

    #[test]
    fn word_boundaries_matter() {
        // "price" inside "priceless" and "error" inside "terrorist" are not keywords.
        assert_eq!(classify("priceless moments"), Intent::Other);
        assert_eq!(classify("terrorific"), Intent::Other);
    }

    #[test]
    fn normalizes_for_grouping() {
        assert_eq!(
            normalize("  How do I EXPORT my data?? "),
            "how do i export my data"
        );
        assert_eq!(
            normalize("How do I export my data"),
            normalize("how do i export, my data!")
        );
    }

    #[test]
    fn topics_come_from_sources_then_keywords() {
        let urls = vec!["https://docs.acme.test/export/csv#section".to_string()];
        assert_eq!(topic("anything", &urls).as_deref(), Some("export"));
        assert_eq!(
            topic("How do I configure SAML?", &[]).as_deref(),
            Some("configure")
        );
        assert_eq!(topic("is it ok", &[]), None);
    }
}
