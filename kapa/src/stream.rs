//! Kapa's streamed answer: JSON pieces separated by U+241E (`␞`, bytes E2 90 9E), each
//! `{"chunk": {"type", "content", "stream_end"}}`. Pieces may be split anywhere across network
//! reads, so bytes are buffered until a separator (or the end of the body).
use serde::Deserialize;

const SEPARATOR: &[u8] = "\u{241E}".as_bytes();

/// One piece of a stream, as far as this client needs it. Unknown types are kept as `Other`
/// and ignored.
#[derive(Debug, Clone, PartialEq)]
pub enum Chunk {
    /// The thread the answer belongs to.
    StreamStart { thread_id: Option<String> },
    /// The sources the answer cites.
    RelevantSources(Vec<crate::client::RelevantSource>),
    /// More of the answer's text.
    PartialAnswer(String),
    /// Whether Kapa is unsure.
    Metadata { is_uncertain: Option<bool> },
    /// The normal end: the ids of the answer.
    Identifiers {
        thread_id: Option<String>,
        question_answer_id: Option<String>,
    },
    /// Kapa reports an error; the stream ends.
    Error(String),
    /// Anything else (`agent_activity_update`, future types).
    Other,
}

#[derive(Deserialize)]
struct Envelope {
    chunk: RawChunk,
}

#[derive(Deserialize)]
struct RawChunk {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    content: serde_json::Value,
}

/// Why a piece could not be read.
#[derive(Debug, thiserror::Error)]
#[error("an unreadable stream chunk: {0}")]
pub struct ChunkError(String);

/// Splits a byte stream into chunks.
#[derive(Default)]
pub struct ChunkParser {
    buffer: Vec<u8>,
}

impl ChunkParser {
    /// Feeds bytes; returns every chunk completed by them.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<Chunk>, ChunkError> {
        self.buffer.extend_from_slice(bytes);
        let mut chunks = Vec::new();
        while let Some(at) = find(&self.buffer, SEPARATOR) {
            let piece: Vec<u8> = self.buffer.drain(..at + SEPARATOR.len()).collect();
            if let Some(chunk) = parse(&piece[..at])? {
                chunks.push(chunk);
            }
        }
        Ok(chunks)
    }

    /// The body ended: whatever is left is the last piece.
    pub fn finish(&mut self) -> Result<Option<Chunk>, ChunkError> {
        let rest = std::mem::take(&mut self.buffer);
        parse(&rest)
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn parse(piece: &[u8]) -> Result<Option<Chunk>, ChunkError> {
    let text = std::str::from_utf8(piece).map_err(|e| ChunkError(e.to_string()))?;
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    let envelope: Envelope = serde_json::from_str(text).map_err(|e| ChunkError(e.to_string()))?;
    let content = envelope.chunk.content;
    let string = |key: &str| {
        content
            .get(key)
            .and_then(|v| v.as_str())
            .map(str::to_string)
    };
    Ok(Some(match envelope.chunk.kind.as_str() {
        "stream_start" => Chunk::StreamStart {
            thread_id: string("thread_id"),
        },
        "relevant_sources" => {
            let sources = content
                .get("relevant_sources")
                .cloned()
                .map(serde_json::from_value)
                .transpose()
                .map_err(|e| ChunkError(e.to_string()))?
                .unwrap_or_default();
            Chunk::RelevantSources(sources)
        }
        "partial_answer" => Chunk::PartialAnswer(
            string("text").ok_or_else(|| ChunkError("partial_answer without text".into()))?,
        ),
        "metadata" => Chunk::Metadata {
            is_uncertain: content.get("is_uncertain").and_then(|v| v.as_bool()),
        },
        "identifiers" => Chunk::Identifiers {
            thread_id: string("thread_id"),
            question_answer_id: string("question_answer_id"),
        },
        "error" => Chunk::Error(string("reason").unwrap_or_else(|| "unknown error".into())),
        _ => Chunk::Other,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn piece(kind: &str, content: serde_json::Value) -> String {
        format!(
            "{}\u{241E}",
            serde_json::json!({"chunk": {"type": kind, "content": content, "stream_end": false}})
        )
    }

    #[test]
    fn reassembles_chunks_split_across_reads_even_inside_the_separator() {
        let body = [
            piece("partial_answer", serde_json::json!({"text": "Hello "})),
            piece("agent_activity_update", serde_json::json!({"x": 1})),
            piece("partial_answer", serde_json::json!({"text": "wörld"})),
            piece(
                "identifiers",
                serde_json::json!({"thread_id": "t", "question_answer_id": "q"}),
            ),
        ]
        .concat();
        let bytes = body.as_bytes();
        for split in 1..bytes.len() {
            let mut parser = ChunkParser::default();
            let mut chunks = parser.push(&bytes[..split]).unwrap();
            chunks.extend(parser.push(&bytes[split..]).unwrap());
            chunks.extend(parser.finish().unwrap());
            assert_eq!(chunks.len(), 4, "split at {split}");
            assert_eq!(chunks[2], Chunk::PartialAnswer("wörld".into()));
        }
    }

    #[test]
    fn the_control_character_is_not_the_separator_and_garbage_is_an_error() {
        let mut parser = ChunkParser::default();
        assert!(parser
            .push(b"{\"chunk\":{\"type\":\"metadata\",\"content\":{}}}\x1e")
            .unwrap()
            .is_empty());
        assert!(parser.finish().is_err());
        let mut parser = ChunkParser::default();
        assert!(parser.push("not json\u{241E}".as_bytes()).is_err());
    }
}
