//! Tokenizers of the model folder (`tokenizer.json`, or `vocab.txt` for WordPiece, or
//! `vocab.json` + `merges.txt` for byte-level BPE), with padding and truncation owned by
//! lmcompare: a shipped `tokenizer.json` that pads to a fixed length would waste compute,
//! and one that truncates silently would hide lost text.

use std::path::Path;

use serde_json::Value;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::decoders::wordpiece::WordPiece as WordPieceDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::processors::roberta::RobertaProcessing;
use tokenizers::{Tokenizer, TruncationParams};

use crate::error::{EngineError, Result};

pub struct TextTokenizer {
    inner: Tokenizer,
    max_length: usize,
    unk_id: Option<u32>,
    source: String,
}

/// One text's tokens.
#[derive(Debug, Clone)]
pub struct Encoded {
    pub ids: Vec<u32>,
    pub tokens: Vec<String>,
    /// Whether the text was cut at the maximum length.
    pub truncated: bool,
    /// Whitespace-separated words in the text (for tokens per word).
    pub words: usize,
    /// Non-special tokens, and how many of them are the unknown token.
    pub content_tokens: usize,
    pub unknown_tokens: usize,
    /// Each token's span in the text, in bytes ((0, 0) for added special tokens).
    pub offsets: Vec<(usize, usize)>,
    /// Whether each token is a special token ([CLS], </s>, ...).
    pub special: Vec<bool>,
}

fn read_json(path: &Path) -> Option<Value> {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
}

impl TextTokenizer {
    /// Loads the tokenizer of `dir`, truncating to `max_length` tokens (special tokens
    /// included).
    pub fn load(dir: &Path, max_length: usize) -> Result<Self> {
        let json = dir.join("tokenizer.json");
        let tok_config = read_json(&dir.join("tokenizer_config.json"));
        let (mut inner, source) = if json.exists() {
            let t = crate::guard::load_tokenizer_json(&json)?;
            (t, "tokenizer.json".to_owned())
        } else if dir.join("vocab.txt").exists() {
            let vocab = dir.join("vocab.txt");
            let lowercase = tok_config
                .as_ref()
                .and_then(|c| c["do_lower_case"].as_bool())
                .unwrap_or(true);
            let wp = WordPiece::from_file(&vocab.to_string_lossy())
                .unk_token("[UNK]".into())
                .build()
                .map_err(|e| {
                    EngineError::file(&vocab, format!("cannot load WordPiece vocabulary: {e}"))
                })?;
            let mut t = Tokenizer::new(wp);
            let id = |s: &str| {
                t.token_to_id(s).ok_or_else(|| {
                    EngineError::file(&vocab, format!("vocabulary has no {s} token"))
                })
            };
            let (cls, sep) = (id("[CLS]")?, id("[SEP]")?);
            t.with_normalizer(Some(BertNormalizer::new(true, true, None, lowercase)))
                .map_err(|e| EngineError::file(&vocab, format!("cannot set normalizer: {e}")))?;
            t.with_pre_tokenizer(Some(BertPreTokenizer));
            t.with_post_processor(Some(BertProcessing::new(
                ("[SEP]".into(), sep),
                ("[CLS]".into(), cls),
            )));
            t.with_decoder(Some(WordPieceDecoder::default()));
            (t, "vocab.txt (WordPiece)".to_owned())
        } else if dir.join("vocab.json").exists() && dir.join("merges.txt").exists() {
            let (vocab, merges) = (dir.join("vocab.json"), dir.join("merges.txt"));
            let bpe = BPE::from_file(&vocab.to_string_lossy(), &merges.to_string_lossy())
                .build()
                .map_err(|e| {
                    EngineError::file(&vocab, format!("cannot load BPE vocabulary: {e}"))
                })?;
            let mut t = Tokenizer::new(bpe);
            let id = |s: &str| {
                t.token_to_id(s).ok_or_else(|| {
                    EngineError::file(&vocab, format!("vocabulary has no {s} token"))
                })
            };
            let (bos, eos) = (id("<s>")?, id("</s>")?);
            t.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
            t.with_post_processor(Some(RobertaProcessing::new(
                ("</s>".into(), eos),
                ("<s>".into(), bos),
            )));
            t.with_decoder(Some(ByteLevelDecoder::default()));
            (t, "vocab.json + merges.txt (byte-level BPE)".to_owned())
        } else {
            return Err(EngineError::file(
                dir,
                "no tokenizer: expected tokenizer.json, vocab.txt, or vocab.json + merges.txt",
            ));
        };
        inner.with_padding(None);
        inner
            .with_truncation(Some(TruncationParams {
                max_length,
                ..Default::default()
            }))
            .map_err(|e| EngineError::file(dir, format!("cannot set truncation: {e}")))?;
        let unk_id = ["[UNK]", "<unk>", "<UNK>"]
            .iter()
            .find_map(|t| inner.token_to_id(t));
        Ok(TextTokenizer {
            inner,
            max_length,
            unk_id,
            source,
        })
    }

    pub fn max_length(&self) -> usize {
        self.max_length
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Largest token id the tokenizer can produce.
    pub fn max_id(&self) -> u32 {
        self.inner
            .get_vocab(true)
            .values()
            .copied()
            .max()
            .unwrap_or(0)
    }

    pub fn encode_batch(&self, texts: &[&str]) -> Result<Vec<Encoded>> {
        if let Some(i) = texts.iter().position(|t| t.trim().is_empty()) {
            return Err(EngineError::BadInput(format!(
                "text {} is empty: every input needs some text",
                i + 1
            )));
        }
        let encodings = self
            .inner
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| EngineError::Runtime(format!("tokenization failed: {e}")))?;
        Ok(encodings
            .into_iter()
            .zip(texts)
            .map(|(e, text)| {
                let special = e.get_special_tokens_mask();
                let content_tokens = special.iter().filter(|&&m| m == 0).count();
                let unknown_tokens = match self.unk_id {
                    Some(u) => e
                        .get_ids()
                        .iter()
                        .zip(special)
                        .filter(|(id, m)| **id == u && **m == 0)
                        .count(),
                    None => 0,
                };
                Encoded {
                    ids: e.get_ids().to_vec(),
                    tokens: e.get_tokens().to_vec(),
                    truncated: !e.get_overflowing().is_empty(),
                    words: text.split_whitespace().count(),
                    content_tokens,
                    unknown_tokens,
                    offsets: e.get_offsets().to_vec(),
                    special: special.iter().map(|&m| m != 0).collect(),
                }
            })
            .collect())
    }
}
