//! Tokenizer for llama-family models, built either from a Hugging Face `tokenizer.json` or
//! from the tokenizer stored in a GGUF file's metadata (`tokenizer.ggml.*`).
//!
//! GGUF support covers byte-level BPE vocabularies (`tokenizer.ggml.model = "gpt2"`), which is
//! what SmolLM2, Llama 3 and Qwen2 use. The pre-tokenizer is chosen from `tokenizer.ggml.pre`
//! the way llama.cpp does (`smollm`: single digits then GPT-2 byte-level splitting).
//! SentencePiece vocabularies (`llama`) are refused with a clear error: pass a
//! `tokenizer.json` instead.

use std::path::Path;

use candle_core::quantized::gguf_file;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::unicode::NFC;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{AddedToken, SplitDelimiterBehavior};

use crate::{LmError, Result};

/// A text tokenizer plus the model's special token ids.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    bos: Option<u32>,
    eos: Option<u32>,
    add_bos: bool,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .finish()
    }
}

fn tok_err(e: impl std::fmt::Display) -> LmError {
    LmError::Tokenizer(e.to_string())
}

fn file_err(path: &Path, msg: impl Into<String>) -> LmError {
    LmError::File {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

fn meta<'a>(ct: &'a gguf_file::Content, key: &str) -> Option<&'a gguf_file::Value> {
    ct.metadata.get(key)
}

fn meta_u32(ct: &gguf_file::Content, key: &str) -> Option<u32> {
    use gguf_file::Value::*;
    match meta(ct, key)? {
        U8(v) => Some(*v as u32),
        I8(v) => Some(*v as u32),
        U16(v) => Some(*v as u32),
        I16(v) => Some(*v as u32),
        U32(v) => Some(*v),
        I32(v) => Some(*v as u32),
        U64(v) => Some(*v as u32),
        I64(v) => Some(*v as u32),
        _ => None,
    }
}

fn string_array(ct: &gguf_file::Content, key: &str) -> Result<Vec<String>> {
    let v = meta(ct, key)
        .ok_or_else(|| tok_err(format!("GGUF metadata has no `{key}`")))?
        .to_vec()
        .map_err(|_| tok_err(format!("GGUF metadata `{key}` is not an array")))?;
    v.iter()
        .map(|x| {
            x.to_string()
                .cloned()
                .map_err(|_| tok_err(format!("GGUF metadata `{key}` holds a non-string")))
        })
        .collect()
}

fn regex_split(re: &str) -> Result<PreTokenizerWrapper> {
    Ok(Split::new(
        SplitPattern::Regex(re.to_string()),
        SplitDelimiterBehavior::Isolated,
        false,
    )
    .map_err(tok_err)?
    .into())
}

impl Tokenizer {
    /// Loads a Hugging Face `tokenizer.json`. BOS/EOS are looked up among the usual names;
    /// override them with [`Tokenizer::with_special_ids`].
    pub fn from_file(path: &Path) -> Result<Self> {
        if !path.is_file() {
            return Err(file_err(path, "tokenizer file not found"));
        }
        let mut inner = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| file_err(path, format!("cannot read tokenizer: {e}")))?;
        // Sequences are batched by the generator/trainer, never padded or cut by the tokenizer.
        inner.with_padding(None);
        inner
            .with_truncation(None)
            .map_err(|e| file_err(path, format!("cannot disable truncation: {e}")))?;
        let find = |names: &[&str]| names.iter().find_map(|n| inner.token_to_id(n));
        let bos = find(&["<|im_start|>", "<s>", "<|begin_of_text|>", "<|endoftext|>"]);
        let eos = find(&["<|im_end|>", "</s>", "<|end_of_text|>", "<|endoftext|>"]);
        Ok(Self {
            inner,
            bos,
            eos,
            add_bos: false,
        })
    }

    /// Builds the tokenizer stored in a GGUF file's metadata.
    pub fn from_gguf(path: &Path) -> Result<Self> {
        let mut file = std::fs::File::open(path).map_err(|e| file_err(path, e.to_string()))?;
        let ct = gguf_file::Content::read(&mut file)
            .map_err(|e| file_err(path, format!("not a readable GGUF file: {e}")))?;
        Self::from_gguf_content(&ct).map_err(|e| file_err(path, e.to_string()))
    }

    /// Builds the tokenizer from already-parsed GGUF metadata.
    pub fn from_gguf_content(ct: &gguf_file::Content) -> Result<Self> {
        let model = match meta(ct, "tokenizer.ggml.model") {
            Some(v) => v
                .to_string()
                .map_err(|_| tok_err("`tokenizer.ggml.model` is not a string"))?
                .clone(),
            None => return Err(tok_err(
                "the GGUF file has no tokenizer (no `tokenizer.ggml.model`); pass a tokenizer.json",
            )),
        };
        if model != "gpt2" {
            return Err(tok_err(format!(
                "GGUF tokenizer model `{model}` is not supported (only byte-level BPE, `gpt2`); \
                 pass the model's tokenizer.json instead"
            )));
        }
        let tokens = string_array(ct, "tokenizer.ggml.tokens")?;
        let merges: Vec<(String, String)> = string_array(ct, "tokenizer.ggml.merges")?
            .into_iter()
            .map(|m| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .ok_or_else(|| tok_err(format!("invalid BPE merge `{m}`")))
            })
            .collect::<Result<_>>()?;
        let vocab: Vocab = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(tok_err)?;
        let mut inner = tokenizers::Tokenizer::new(bpe);

        let pre = meta(ct, "tokenizer.ggml.pre")
            .and_then(|v| v.to_string().ok().cloned())
            .unwrap_or_else(|| "default".to_string());
        // Pre-tokenizers as in llama.cpp's `llama_vocab::impl::load` for each `pre` type.
        const LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
        const QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
        let pretok: PreTokenizerWrapper = match pre.as_str() {
            // SmolLM / StarCoder: every digit on its own, then GPT-2 splitting.
            "smollm" | "starcoder" | "refact" | "codeshell" => Sequence::new(vec![
                Digits::new(true).into(),
                ByteLevel::new(false, true, true).into(),
            ])
            .into(),
            "llama3" | "llama-bpe" | "smaug-bpe" => Sequence::new(vec![
                regex_split(LLAMA3)?,
                ByteLevel::new(false, true, false).into(),
            ])
            .into(),
            "qwen2" => {
                inner.with_normalizer(Some(NFC));
                Sequence::new(vec![
                    regex_split(QWEN2)?,
                    ByteLevel::new(false, false, false).into(),
                ])
                .into()
            }
            _ => ByteLevel::new(false, true, true).into(),
        };
        inner.with_pre_tokenizer(Some(pretok));
        inner.with_decoder(Some(ByteLevelDecoder::default()));

        // Control / user-defined tokens (llama.cpp token types 3 and 4) are matched whole.
        if let Some(Ok(types)) = meta(ct, "tokenizer.ggml.token_type").map(|v| v.to_vec()) {
            let specials: Vec<AddedToken> = types
                .iter()
                .enumerate()
                .filter(|(_, t)| matches!(t.to_i32(), Ok(3) | Ok(4)))
                .filter_map(|(i, _)| tokens.get(i))
                .map(|t| AddedToken::from(t.clone(), true))
                .collect();
            inner.add_special_tokens(&specials);
        }
        let bos = meta_u32(ct, "tokenizer.ggml.bos_token_id");
        let eos = meta_u32(ct, "tokenizer.ggml.eos_token_id");
        let add_bos = meta(ct, "tokenizer.ggml.add_bos_token")
            .and_then(|v| v.to_bool().ok())
            .unwrap_or(false);
        Ok(Self {
            inner,
            bos,
            eos,
            add_bos,
        })
    }

    /// Overrides the BOS/EOS ids (e.g. from a model's config.json).
    pub fn with_special_ids(mut self, bos: Option<u32>, eos: Option<u32>) -> Self {
        if bos.is_some() {
            self.bos = bos;
        }
        if eos.is_some() {
            self.eos = eos;
        }
        self
    }

    /// Token ids of `text`. With `add_special`, the tokenizer's own post-processing runs
    /// (for GGUF files with `add_bos_token = true`, BOS is prepended).
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>> {
        let enc = self.inner.encode(text, add_special).map_err(tok_err)?;
        let mut ids = enc.get_ids().to_vec();
        if add_special && self.add_bos {
            if let Some(b) = self.bos {
                if ids.first() != Some(&b) {
                    ids.insert(0, b);
                }
            }
        }
        Ok(ids)
    }

    /// Text of `ids`, special tokens included verbatim.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, false).map_err(tok_err)
    }

    /// Text of `ids` with special tokens (BOS, EOS, chat markers) left out.
    pub fn decode_skip_special(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, true).map_err(tok_err)
    }

    pub fn bos_id(&self) -> Option<u32> {
        self.bos
    }

    pub fn eos_id(&self) -> Option<u32> {
        self.eos
    }

    /// Number of ids, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The id of a token string (e.g. `"<|im_end|>"`).
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The underlying `tokenizers` tokenizer.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}
