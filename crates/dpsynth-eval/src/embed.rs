//! Sentence embeddings with all-MiniLM-L6-v2 (BERT, 6 layers, 384 dims) on candle.
//!
//! Matches sentence-transformers' `all-MiniLM-L6-v2`: WordPiece tokenization with `[CLS]`/`[SEP]`,
//! truncation to 256 tokens, mean pooling of the last hidden state over the attention mask,
//! then L2 normalization. Texts are embedded in batches sorted by token length (little padding)
//! and the result is cached on disk keyed by the SHA-256 of the model files and the texts.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use sha2::{Digest, Sha256};
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use crate::{io_err, EvalError, Progress, Result};

/// Maximum sequence length of all-MiniLM-L6-v2 (sentence-transformers' `max_seq_length`).
pub const MAX_TOKENS: usize = 256;
/// Embedding dimension.
pub const DIM: usize = 384;

/// A row-major matrix of embeddings: `n` rows of `dim` f32.
#[derive(Clone, Debug, PartialEq)]
pub struct Embeddings {
    pub n: usize,
    pub dim: usize,
    pub data: Vec<f32>,
}

impl Embeddings {
    pub fn new(n: usize, dim: usize, data: Vec<f32>) -> Self {
        assert_eq!(data.len(), n * dim, "embedding buffer size");
        Self { n, dim, data }
    }
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }
    /// Rows `idx` as a new matrix.
    pub fn select(&self, idx: &[usize]) -> Embeddings {
        let mut data = Vec::with_capacity(idx.len() * self.dim);
        for &i in idx {
            data.extend_from_slice(self.row(i));
        }
        Embeddings::new(idx.len(), self.dim, data)
    }
}

/// Locate the MiniLM directory: an explicit path, else `$DPSYNTH_ASSETS/minilm`, else
/// `<workspace>/assets/minilm` (found from the current directory upwards).
pub fn find_minilm_dir(explicit: Option<&Path>) -> Option<PathBuf> {
    let ok = |p: &Path| p.join("model.safetensors").is_file() && p.join("tokenizer.json").is_file();
    if let Some(p) = explicit {
        return ok(p).then(|| p.to_path_buf());
    }
    if let Ok(a) = std::env::var("DPSYNTH_ASSETS") {
        let p = PathBuf::from(a).join("minilm");
        if ok(&p) {
            return Some(p);
        }
    }
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        dirs.extend(cwd.ancestors().map(Path::to_path_buf));
    }
    dirs.extend(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .ancestors()
            .map(Path::to_path_buf),
    );
    dirs.into_iter()
        .map(|d| d.join("assets").join("minilm"))
        .find(|p| ok(p))
}

/// all-MiniLM-L6-v2 loaded on a candle device.
pub struct MiniLm {
    model: BertModel,
    tokenizer: Tokenizer,
    device: Device,
    model_hash: String,
}

impl MiniLm {
    /// Load `config.json`, `model.safetensors` and `tokenizer.json` from `dir`.
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let cfg_path = dir.join("config.json");
        let weights = dir.join("model.safetensors");
        let tok_path = dir.join("tokenizer.json");
        for p in [&cfg_path, &weights, &tok_path] {
            if !p.is_file() {
                return Err(EvalError::MissingAsset(p.display().to_string()));
            }
        }
        let cfg_text = std::fs::read_to_string(&cfg_path).map_err(io_err(&cfg_path))?;
        let config: Config = serde_json::from_str(&cfg_text)?;
        let mut tokenizer =
            Tokenizer::from_file(&tok_path).map_err(|e| EvalError::Tokenizer(e.to_string()))?;
        // The shipped tokenizer.json pads/truncates to 128; sentence-transformers uses 256 and
        // we pad ourselves per batch.
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: MAX_TOKENS,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }))
            .map_err(|e| EvalError::Tokenizer(e.to_string()))?;
        tokenizer.with_padding(None);

        let mut h = Sha256::new();
        for p in [&cfg_path, &weights, &tok_path] {
            let bytes = std::fs::read(p).map_err(io_err(p))?;
            h.update((bytes.len() as u64).to_le_bytes());
            h.update(&bytes);
        }
        let model_hash = hex(&h.finalize());

        // SAFETY: the weights file is memory-mapped read-only; it must not be modified while
        // loaded (candle's documented requirement for `from_mmaped_safetensors`).
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[&weights], DType::F32, device)? };
        let model = BertModel::load(vb, &config)?;
        Ok(Self {
            model,
            tokenizer,
            device: device.clone(),
            model_hash,
        })
    }

    /// SHA-256 over the model's config, weights and tokenizer.
    pub fn model_hash(&self) -> &str {
        &self.model_hash
    }

    /// Whole words of the (public) WordPiece vocabulary: entries without `##`, made of
    /// lowercase letters/digits/apostrophes, in id order. Used as a data-independent vocabulary.
    pub fn public_words(&self) -> Vec<String> {
        public_word_ids(&self.tokenizer)
            .into_iter()
            .map(|x| x.0)
            .collect()
    }

    /// Token ids with `[CLS]`/`[SEP]`, truncated to [`MAX_TOKENS`].
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| EvalError::Tokenizer(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Embed already-tokenized sequences of (roughly) similar length as one padded batch.
    pub fn embed_ids(&self, batch: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let b = batch.len();
        let len = batch.iter().map(Vec::len).max().unwrap_or(0).max(1);
        let mut ids = vec![0u32; b * len];
        let mut mask = vec![0u32; b * len];
        for (i, seq) in batch.iter().enumerate() {
            ids[i * len..i * len + seq.len()].copy_from_slice(seq);
            for m in &mut mask[i * len..i * len + seq.len()] {
                *m = 1;
            }
        }
        let ids = Tensor::from_vec(ids, (b, len), &self.device)?;
        let mask = Tensor::from_vec(mask, (b, len), &self.device)?;
        let types = ids.zeros_like()?;
        let hidden = self.model.forward(&ids, &types, Some(&mask))?; // (b, len, dim)
        let maskf = mask.to_dtype(DType::F32)?.unsqueeze(2)?; // (b, len, 1)
        let summed = hidden.broadcast_mul(&maskf)?.sum(1)?; // (b, dim)
        let counts = maskf.sum(1)?.clamp(1e-9, f64::INFINITY)?; // (b, 1)
        let mean = summed.broadcast_div(&counts)?;
        let norm = mean
            .sqr()?
            .sum_keepdim(1)?
            .sqrt()?
            .clamp(1e-12, f64::INFINITY)?;
        let out = mean.broadcast_div(&norm)?;
        Ok(out.to_vec2::<f32>()?)
    }

    /// Embed `texts` in batches of `batch_size`, sorted by token length; rows in input order.
    pub fn embed(
        &self,
        texts: &[String],
        batch_size: usize,
        progress: &Progress,
    ) -> Result<Embeddings> {
        let batch_size = batch_size.max(1);
        let toks: Vec<Vec<u32>> = texts
            .iter()
            .map(|t| self.tokenize(t))
            .collect::<Result<_>>()?;
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| toks[i].len());
        let mut data = vec![0f32; texts.len() * DIM];
        let pb = progress.bar("embedding (MiniLM)", texts.len() as u64);
        for chunk in order.chunks(batch_size) {
            let batch: Vec<Vec<u32>> = chunk.iter().map(|&i| toks[i].clone()).collect();
            let rows = self.embed_ids(&batch)?;
            for (&i, row) in chunk.iter().zip(rows) {
                data[i * DIM..(i + 1) * DIM].copy_from_slice(&row);
            }
            pb.inc(chunk.len() as u64);
        }
        pb.finish_and_clear();
        Ok(Embeddings::new(texts.len(), DIM, data))
    }

    /// Cache key for `texts` under this model: SHA-256 of the model hash and the texts.
    pub fn cache_key(&self, texts: &[String]) -> String {
        let mut h = Sha256::new();
        h.update(b"dpsynth-minilm-v1\0");
        h.update(self.model_hash.as_bytes());
        h.update(MAX_TOKENS.to_le_bytes());
        for t in texts {
            h.update((t.len() as u64).to_le_bytes());
            h.update(t.as_bytes());
        }
        hex(&h.finalize())
    }

    /// Like [`MiniLm::embed`], but reuse `<cache_dir>/minilm-<key>.safetensors` when present and
    /// write it otherwise. Returns the embeddings and whether they came from the cache.
    pub fn embed_cached(
        &self,
        texts: &[String],
        cache_dir: Option<&Path>,
        progress: &Progress,
    ) -> Result<(Embeddings, bool)> {
        let Some(dir) = cache_dir else {
            return Ok((self.embed(texts, 64, progress)?, false));
        };
        let path = dir.join(format!("minilm-{}.safetensors", self.cache_key(texts)));
        if path.is_file() {
            match load_cache(&path, texts.len()) {
                Ok(e) => return Ok((e, true)),
                Err(e) => tracing::warn!(
                    "ignoring unreadable embedding cache {}: {e}",
                    path.display()
                ),
            }
        }
        let emb = self.embed(texts, 64, progress)?;
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let t = Tensor::from_vec(emb.data.clone(), (emb.n, emb.dim), &Device::Cpu)?;
        let tmp = path.with_extension("tmp");
        candle_core::safetensors::save(&HashMap::from([("embeddings".to_string(), t)]), &tmp)?;
        std::fs::rename(&tmp, &path).map_err(io_err(&path))?;
        Ok((emb, false))
    }
}

/// Whole words of a (public) WordPiece vocabulary with their token ids, in id order: entries
/// without `##`, made of lowercase letters/digits/apostrophes.
pub fn public_word_ids(tokenizer: &Tokenizer) -> Vec<(String, u32)> {
    let mut v: Vec<(String, u32)> = tokenizer
        .get_vocab(false)
        .into_iter()
        .filter(|(w, _)| {
            !w.is_empty()
                && w.chars()
                    .all(|c| (c.is_alphanumeric() && !c.is_uppercase()) || c == '\'')
        })
        .collect();
    v.sort_by_key(|x| x.1);
    v
}

fn load_cache(path: &Path, n: usize) -> Result<Embeddings> {
    let m = candle_core::safetensors::load(path, &Device::Cpu)?;
    let t = m
        .get("embeddings")
        .ok_or_else(|| EvalError::Invalid("no `embeddings` tensor".into()))?;
    let (rows, dim) = t.dims2()?;
    if rows != n {
        return Err(EvalError::Invalid(format!("{rows} rows, expected {n}")));
    }
    Ok(Embeddings::new(rows, dim, t.flatten_all()?.to_vec1()?))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn select_rows() {
        let e = Embeddings::new(3, 2, vec![1., 2., 3., 4., 5., 6.]);
        assert_eq!(e.select(&[2, 0]).data, vec![5., 6., 1., 2.]);
    }
}
