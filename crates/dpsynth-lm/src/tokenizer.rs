//! Tokenizer for llama-family models, built either from a Hugging Face `tokenizer.json` or
//! from the tokenizer stored in a GGUF file's metadata (`tokenizer.ggml.*`).
//!
//! GGUF support covers byte-level BPE vocabularies (`tokenizer.ggml.model = "gpt2"`), which is
//! what SmolLM2, Llama 3 and Qwen2/3 use, and SentencePiece BPE vocabularies
//! (`tokenizer.ggml.model = "llama"`: TinyLlama/Llama 2, Gemma). For byte-level BPE the
//! pre-tokenizer is chosen from `tokenizer.ggml.pre` the way llama.cpp does (`smollm`: single
//! digits then GPT-2 byte-level splitting). SentencePiece vocabularies are rebuilt the way
//! transformers' `convert_slow_tokenizer` does (`SpmConverter` / `GemmaConverter`): merges
//! from the pieces' scores, byte fallback, spaces as `▁`.

use std::path::Path;

use candle_core::quantized::gguf_file;
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::decoders::DecoderWrapper;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::prepend::Prepend;
use tokenizers::normalizers::replace::Replace;
use tokenizers::normalizers::unicode::NFC;
use tokenizers::normalizers::Sequence as NormalizerSequence;
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
        if model == "llama" {
            return Self::spm_from_gguf(ct);
        }
        if model != "gpt2" {
            return Err(tok_err(format!(
                "GGUF tokenizer model `{model}` is not supported (supported: byte-level BPE \
                 `gpt2`, SentencePiece `llama`); pass the model's tokenizer.json instead"
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

    /// A SentencePiece BPE vocabulary from GGUF metadata (`tokenizer.ggml.model = "llama"`:
    /// TinyLlama / Llama 2, Gemma), rebuilt as transformers' `SpmConverter` does: BPE merges
    /// generated from the pieces' scores, byte fallback (`<0xXX>` pieces), spaces replaced by
    /// `▁` (with a leading `▁` when `tokenizer.ggml.add_space_prefix`, the default for llama,
    /// false for Gemma). Control pieces (token type 3) are special tokens; user-defined pieces
    /// (type 4: Gemma's newline, tab and space runs) are matched whole, as SentencePiece does.
    fn spm_from_gguf(ct: &gguf_file::Content) -> Result<Self> {
        let tokens = string_array(ct, "tokenizer.ggml.tokens")?;
        let scores: Vec<f32> = meta(ct, "tokenizer.ggml.scores")
            .ok_or_else(|| tok_err("GGUF metadata has no `tokenizer.ggml.scores`"))?
            .to_vec()
            .map_err(|_| tok_err("`tokenizer.ggml.scores` is not an array"))?
            .iter()
            .map(|v| {
                v.to_f32()
                    .map_err(|_| tok_err("`tokenizer.ggml.scores` holds a non-f32"))
            })
            .collect::<Result<_>>()?;
        if scores.len() != tokens.len() {
            return Err(tok_err(format!(
                "{} scores for {} tokens",
                scores.len(),
                tokens.len()
            )));
        }
        let types: Vec<i32> = match meta(ct, "tokenizer.ggml.token_type").map(|v| v.to_vec()) {
            Some(Ok(v)) => v.iter().map(|t| t.to_i32().unwrap_or(1)).collect(),
            _ => vec![1; tokens.len()],
        };
        let mut vocab = Vocab::default();
        for (i, t) in tokens.iter().enumerate() {
            vocab.entry(t.clone()).or_insert(i as u32);
        }
        // transformers' `generate_merges`: every split of a piece into two pieces is a merge,
        // ranked by the merged piece's score (then longer left, then longer right piece).
        struct M {
            score: f32,
            ll: usize,
            lr: usize,
            l: u32,
            r: u32,
        }
        let mut merges: Vec<M> = Vec::new();
        let mut local: Vec<M> = Vec::new();
        for (i, t) in tokens.iter().enumerate() {
            if vocab.get(t) != Some(&(i as u32)) {
                continue; // a duplicate piece
            }
            local.clear();
            for (k, _) in t.char_indices().skip(1) {
                let (a, b) = t.split_at(k);
                if let (Some(&l), Some(&r)) = (vocab.get(a), vocab.get(b)) {
                    local.push(M {
                        score: scores[i],
                        ll: a.chars().count(),
                        lr: b.chars().count(),
                        l,
                        r,
                    });
                }
            }
            local.sort_by_key(|m| (m.l, m.r));
            merges.append(&mut local);
        }
        // Stable, descending (Python's `sorted(..., reverse=True)` keeps ties in order).
        merges.sort_by(|a, b| {
            b.score
                .total_cmp(&a.score)
                .then(b.ll.cmp(&a.ll))
                .then(b.lr.cmp(&a.lr))
        });
        let merges: Vec<(String, String)> = merges
            .iter()
            .map(|m| (tokens[m.l as usize].clone(), tokens[m.r as usize].clone()))
            .collect();
        let mut builder = BPE::builder()
            .vocab_and_merges(vocab.clone(), merges)
            .byte_fallback(true)
            .fuse_unk(true);
        let unk = meta_u32(ct, "tokenizer.ggml.unknown_token_id")
            .and_then(|i| tokens.get(i as usize).cloned())
            .or_else(|| vocab.contains_key("<unk>").then(|| "<unk>".to_string()));
        if let Some(u) = unk {
            builder = builder.unk_token(u);
        }
        let bpe = builder.build().map_err(tok_err)?;
        let mut inner = tokenizers::Tokenizer::new(bpe);
        let space_prefix = meta(ct, "tokenizer.ggml.add_space_prefix")
            .and_then(|v| v.to_bool().ok())
            .unwrap_or(true);
        let replace = Replace::new(" ", "▁").map_err(tok_err)?;
        if space_prefix {
            inner.with_normalizer(Some(NormalizerSequence::new(vec![
                Prepend::new("▁".to_string()).into(),
                replace.into(),
            ])));
        } else {
            inner.with_normalizer(Some(replace));
        }
        let mut decoders: Vec<DecoderWrapper> = vec![
            Replace::new("▁", " ").map_err(tok_err)?.into(),
            ByteFallback::default().into(),
            Fuse::default().into(),
        ];
        if space_prefix {
            decoders.push(Strip::new(' ', 1, 0).into());
        }
        inner.with_decoder(Some(DecoderSequence::new(decoders)));
        let control: Vec<AddedToken> = types
            .iter()
            .zip(&tokens)
            .filter(|(t, _)| **t == 3)
            .map(|(_, s)| AddedToken::from(s.clone(), true))
            .collect();
        inner.add_special_tokens(&control);
        let user: Vec<AddedToken> = types
            .iter()
            .zip(&tokens)
            .filter(|(t, _)| **t == 4)
            .map(|(_, s)| AddedToken::from(s.clone(), false).normalized(false))
            .collect();
        inner.add_tokens(&user);
        let bos = meta_u32(ct, "tokenizer.ggml.bos_token_id");
        let eos = meta_u32(ct, "tokenizer.ggml.eos_token_id");
        let add_bos = meta(ct, "tokenizer.ggml.add_bos_token")
            .and_then(|v| v.to_bool().ok())
            .unwrap_or(true);
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
