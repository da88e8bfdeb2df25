//! Sentence embeddings with all-MiniLM-L6-v2 (BERT, 6 layers, 384 dims) on candle.
//!
//! Matches sentence-transformers' `all-MiniLM-L6-v2`: WordPiece tokenization with `[CLS]`/`[SEP]`,
//! truncation to 256 tokens, mean pooling of the last hidden state over the attention mask,
//! then L2 normalization. Texts are embedded in batches sorted by token length and the result is
//! cached on disk keyed by the SHA-256 of the model files and the texts.
//!
//! The encoder's frozen linear layers run on the packed bf16 kernels of `dpsynth-kernels` (AMX,
//! AVX-512 BF16 or portable, whichever is fastest on the machine), on each sequence's real
//! tokens only (no padding); see the private `bert` module below.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::Config;
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

/// [`find_minilm_dir`], or [`EvalError::MissingAsset`] naming what was looked for.
pub fn require_minilm_dir(explicit: Option<&Path>) -> Result<PathBuf> {
    find_minilm_dir(explicit).ok_or_else(|| {
        EvalError::MissingAsset(
            explicit.map_or("assets/minilm".to_string(), |p| p.display().to_string()),
        )
    })
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
    model: bert::Bert,
    tokenizer: Tokenizer,
    model_hash: String,
}

impl MiniLm {
    /// Load `config.json`, `model.safetensors` and `tokenizer.json` from `dir`. The weights are
    /// read through `device` but the encoder runs on the CPU (packed bf16 kernels).
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
        let model = bert::Bert::load(vb, &config)?;
        Ok(Self {
            model,
            tokenizer,
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

    /// Embed already-tokenized sequences as one batch (each at its own length, no padding).
    pub fn embed_ids(&self, batch: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        self.model.embed(batch)
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

/// all-MiniLM-L6-v2's BERT encoder with its frozen linear layers on the packed bf16 kernels
/// ([`dpsynth_kernels::PackedWeight`]: AMX / AVX-512 BF16 / portable, chosen per machine).
///
/// Sequences are not padded: the linear layers run on the concatenation of every sequence's
/// real tokens and attention runs per sequence, so a batch costs its token count (a padded
/// position never influences a real one in BERT: it is masked out as a key).
///
/// Numerics: weights and the activations entering each linear layer are rounded to bf16 (f32
/// accumulation); embeddings, layer norms, attention, GELU and pooling are f32. Against the
/// sentence-transformers reference the pooled embeddings keep a cosine ≥ 0.9999
/// (tests/minilm_reference.rs).
mod bert {
    use candle_nn::VarBuilder;
    use candle_transformers::models::bert::{Config, HiddenAct};
    use dpsynth_kernels::{fast_exp, PackedWeight};
    use rayon::prelude::*;

    use crate::{EvalError, Result};

    /// Rows per parallel chunk of the element-wise passes.
    const ROW_CHUNK: usize = 64;

    fn host(t: candle_core::Tensor) -> Result<Vec<f32>> {
        Ok(t.flatten_all()?.to_vec1::<f32>()?)
    }

    /// A frozen `y = x·Wᵀ + b` (weights packed as bf16).
    struct Linear {
        w: PackedWeight,
        b: Vec<f32>,
    }

    impl Linear {
        fn load(vb: &VarBuilder, names: &[&str], inp: usize, out_each: usize) -> Result<Self> {
            let mut ws = Vec::new();
            let mut b = Vec::new();
            for n in names {
                ws.push(vb.get((out_each, inp), &format!("{n}.weight"))?);
                b.extend(host(vb.get(out_each, &format!("{n}.bias"))?)?);
            }
            let w = candle_core::Tensor::cat(&ws, 0)?;
            Ok(Self {
                w: PackedWeight::for_forward(&w)?,
                b,
            })
        }

        /// `y ← act(x·Wᵀ + b)`; `y` is resized (buffers are reused across layers: fresh
        /// multi-MB allocations cost a page fault per 4 KiB).
        fn forward_into(&self, x: &[f32], rows: usize, y: &mut Vec<f32>, act: Option<HiddenAct>) {
            let out = self.w.out_features();
            if y.len() != rows * out {
                y.clear();
                y.resize(rows * out, 0.0);
            }
            self.w.forward(x, rows, y);
            y.par_chunks_mut(out * ROW_CHUNK).for_each(|ch| {
                for row in ch.chunks_mut(out) {
                    for (v, b) in row.iter_mut().zip(&self.b) {
                        *v += b;
                    }
                    if let Some(act) = act {
                        activation(act, row);
                    }
                }
            });
        }
    }

    struct LayerNorm {
        g: Vec<f32>,
        b: Vec<f32>,
        eps: f32,
    }

    impl LayerNorm {
        fn load(vb: &VarBuilder, name: &str, dim: usize, eps: f64) -> Result<Self> {
            Ok(Self {
                g: host(vb.get(dim, &format!("{name}.weight"))?)?,
                b: host(vb.get(dim, &format!("{name}.bias"))?)?,
                eps: eps as f32,
            })
        }

        /// `x ← LayerNorm(x + res)` row by row (`res` optional).
        fn apply(&self, x: &mut [f32], res: Option<&[f32]>) {
            let d = self.g.len();
            x.par_chunks_mut(d * ROW_CHUNK)
                .enumerate()
                .for_each(|(ci, ch)| {
                    for (ri, row) in ch.chunks_mut(d).enumerate() {
                        if let Some(res) = res {
                            let r0 = (ci * ROW_CHUNK + ri) * d;
                            for (v, r) in row.iter_mut().zip(&res[r0..r0 + d]) {
                                *v += r;
                            }
                        }
                        let mean = row.iter().sum::<f32>() / d as f32;
                        let var =
                            row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / d as f32;
                        let inv = 1.0 / (var + self.eps).sqrt();
                        for ((v, g), b) in row.iter_mut().zip(&self.g).zip(&self.b) {
                            *v = (*v - mean) * inv * g + b;
                        }
                    }
                });
        }
    }

    /// erf, Abramowitz & Stegun 7.1.26 (absolute error < 1.5e-7, plus `fast_exp`'s 1e-5
    /// relative on the `e^{-x²}` factor).
    #[inline(always)]
    fn erf(x: f32) -> f32 {
        let a = x.abs();
        let t = 1.0 / (1.0 + 0.327_591_1 * a);
        let poly = t
            * (0.254_829_6
                + t * (-0.284_496_74 + t * (1.421_413_8 + t * (-1.453_152 + t * 1.061_405_4))));
        let y = 1.0 - poly * fast_exp(-a * a);
        if x < 0.0 {
            -y
        } else {
            y
        }
    }

    fn activation(act: HiddenAct, ch: &mut [f32]) {
        match act {
            HiddenAct::Gelu => {
                for v in ch {
                    *v = 0.5 * *v * (1.0 + erf(*v * std::f32::consts::FRAC_1_SQRT_2));
                }
            }
            HiddenAct::GeluApproximate => {
                for v in ch {
                    let u = 0.797_884_6 * (*v + 0.044_715 * *v * *v * *v);
                    *v = 0.5 * *v * (1.0 + u.tanh());
                }
            }
            HiddenAct::Relu => {
                for v in ch {
                    *v = v.max(0.0);
                }
            }
        }
    }

    struct Layer {
        qkv: Linear,
        attn_out: Linear,
        ln_attn: LayerNorm,
        inter: Linear,
        out: Linear,
        ln_out: LayerNorm,
    }

    pub(super) struct Bert {
        word: Vec<f32>,
        pos: Vec<f32>,
        typ0: Vec<f32>,
        ln_emb: LayerNorm,
        layers: Vec<Layer>,
        hidden: usize,
        heads: usize,
        vocab: usize,
        max_pos: usize,
        act: HiddenAct,
    }

    impl Bert {
        pub(super) fn load(vb: VarBuilder, cfg: &Config) -> Result<Self> {
            let vb = if vb.contains_tensor("bert.embeddings.word_embeddings.weight") {
                vb.pp("bert")
            } else {
                vb
            };
            let h = cfg.hidden_size;
            if cfg.num_attention_heads == 0 || !h.is_multiple_of(cfg.num_attention_heads) {
                return Err(EvalError::Invalid(format!(
                    "MiniLM config: hidden_size {h} not divisible by num_attention_heads {}",
                    cfg.num_attention_heads
                )));
            }
            let e = vb.pp("embeddings");
            let word = host(e.get((cfg.vocab_size, h), "word_embeddings.weight")?)?;
            let pos = host(e.get(
                (cfg.max_position_embeddings, h),
                "position_embeddings.weight",
            )?)?;
            let typ = host(e.get((cfg.type_vocab_size, h), "token_type_embeddings.weight")?)?;
            let ln_emb = LayerNorm::load(&e, "LayerNorm", h, cfg.layer_norm_eps)?;
            let mut layers = Vec::new();
            for i in 0..cfg.num_hidden_layers {
                let l = vb.pp(format!("encoder.layer.{i}"));
                let i_sz = cfg.intermediate_size;
                layers.push(Layer {
                    qkv: Linear::load(
                        &l,
                        &[
                            "attention.self.query",
                            "attention.self.key",
                            "attention.self.value",
                        ],
                        h,
                        h,
                    )?,
                    attn_out: Linear::load(&l, &["attention.output.dense"], h, h)?,
                    ln_attn: LayerNorm::load(
                        &l,
                        "attention.output.LayerNorm",
                        h,
                        cfg.layer_norm_eps,
                    )?,
                    inter: Linear::load(&l, &["intermediate.dense"], h, i_sz)?,
                    out: Linear::load(&l, &["output.dense"], i_sz, h)?,
                    ln_out: LayerNorm::load(&l, "output.LayerNorm", h, cfg.layer_norm_eps)?,
                });
            }
            Ok(Self {
                word,
                pos,
                typ0: typ[..h].to_vec(),
                ln_emb,
                layers,
                hidden: h,
                heads: cfg.num_attention_heads,
                vocab: cfg.vocab_size,
                max_pos: cfg.max_position_embeddings,
                act: cfg.hidden_act,
            })
        }

        /// Mean-pooled, L2-normalized last hidden states of each sequence (token type 0, no
        /// padding). An empty sequence gives a zero vector.
        pub(super) fn embed(&self, seqs: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
            let h = self.hidden;
            let mut offsets = Vec::with_capacity(seqs.len() + 1);
            offsets.push(0usize);
            for s in seqs {
                if s.len() > self.max_pos {
                    return Err(EvalError::Invalid(format!(
                        "MiniLM: sequence of {} tokens exceeds {} positions",
                        s.len(),
                        self.max_pos
                    )));
                }
                if let Some(&bad) = s.iter().find(|&&t| t as usize >= self.vocab) {
                    return Err(EvalError::Invalid(format!(
                        "MiniLM: token id {bad} outside the vocabulary of {}",
                        self.vocab
                    )));
                }
                offsets.push(offsets.last().copied().unwrap_or(0) + s.len());
            }
            let rows = *offsets.last().unwrap_or(&0);
            let mut x = vec![0f32; rows * h];
            for (si, s) in seqs.iter().enumerate() {
                for (p, &t) in s.iter().enumerate() {
                    let row = &mut x[(offsets[si] + p) * h..(offsets[si] + p + 1) * h];
                    let w = &self.word[t as usize * h..(t as usize + 1) * h];
                    let pe = &self.pos[p * h..(p + 1) * h];
                    for (((r, w), t), pe) in row.iter_mut().zip(w).zip(&self.typ0).zip(pe) {
                        *r = w + t + pe;
                    }
                }
            }
            self.ln_emb.apply(&mut x, None);
            let (mut qkv, mut ctx, mut a, mut inter, mut o) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for layer in &self.layers {
                layer.qkv.forward_into(&x, rows, &mut qkv, None);
                self.attention(&qkv, &offsets, &mut ctx);
                layer.attn_out.forward_into(&ctx, rows, &mut a, None);
                layer.ln_attn.apply(&mut a, Some(&x));
                layer
                    .inter
                    .forward_into(&a, rows, &mut inter, Some(self.act));
                layer.out.forward_into(&inter, rows, &mut o, None);
                layer.ln_out.apply(&mut o, Some(&a));
                std::mem::swap(&mut x, &mut o);
            }
            Ok(seqs
                .iter()
                .enumerate()
                .map(|(si, s)| {
                    let mut mean = vec![0f32; h];
                    for r in offsets[si]..offsets[si + 1] {
                        for (m, v) in mean.iter_mut().zip(&x[r * h..(r + 1) * h]) {
                            *m += v;
                        }
                    }
                    let n = s.len().max(1) as f32;
                    for m in &mut mean {
                        *m /= n;
                    }
                    let norm = mean.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
                    for m in &mut mean {
                        *m /= norm;
                    }
                    mean
                })
                .collect())
        }

        /// Multi-head self-attention of each sequence (rows `offsets[i]..offsets[i+1]` of
        /// `qkv: [rows, 3h]` = `[q | k | v]`), the heads' contexts concatenated: `[rows, h]`.
        fn attention(&self, qkv: &[f32], offsets: &[usize], ctx: &mut Vec<f32>) {
            let h = self.hidden;
            let nh = self.heads;
            let dh = h / nh;
            let scale = 1.0 / (dh as f32).sqrt();
            let rows = *offsets.last().unwrap_or(&0);
            ctx.clear();
            ctx.resize(rows * h, 0.0);
            // One task per (sequence, head); each returns its [len, dh] block.
            let jobs: Vec<(usize, usize)> = (0..offsets.len() - 1)
                .flat_map(|s| (0..nh).map(move |hd| (s, hd)))
                .collect();
            let blocks: Vec<Vec<f32>> = jobs
                .par_iter()
                .map(|&(s, hd)| {
                    let (o, len) = (offsets[s], offsets[s + 1] - offsets[s]);
                    if len == 0 {
                        return Vec::new();
                    }
                    let col = |r: usize, part: usize| (o + r) * 3 * h + part * h + hd * dh;
                    // Kᵀ: [dh, len], so the scores of one query vectorize over keys.
                    let mut kt = vec![0f32; dh * len];
                    for j in 0..len {
                        let kr = &qkv[col(j, 1)..col(j, 1) + dh];
                        for (d, &v) in kr.iter().enumerate() {
                            kt[d * len + j] = v;
                        }
                    }
                    let mut out = vec![0f32; len * dh];
                    let mut sc = vec![0f32; len];
                    for i in 0..len {
                        let q = &qkv[col(i, 0)..col(i, 0) + dh];
                        sc.fill(0.0);
                        for (qv, kd) in q.iter().zip(kt.chunks(len)) {
                            let qd = qv * scale;
                            for (s, k) in sc.iter_mut().zip(kd) {
                                *s += qd * k;
                            }
                        }
                        let mx = sc.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                        let mut sum = 0f32;
                        for s in sc.iter_mut() {
                            *s = fast_exp(*s - mx);
                            sum += *s;
                        }
                        let inv = 1.0 / sum;
                        let orow = &mut out[i * dh..(i + 1) * dh];
                        for (j, &p) in sc.iter().enumerate() {
                            let vr = &qkv[col(j, 2)..col(j, 2) + dh];
                            let pj = p * inv;
                            for (ov, vv) in orow.iter_mut().zip(vr) {
                                *ov += pj * vv;
                            }
                        }
                    }
                    out
                })
                .collect();
            for (&(s, hd), b) in jobs.iter().zip(&blocks) {
                let o = offsets[s];
                for (i, row) in b.chunks(dh).enumerate() {
                    ctx[(o + i) * h + hd * dh..(o + i) * h + (hd + 1) * dh].copy_from_slice(row);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny random BERT: the engine's encoder (packed bf16 kernels, unpadded) against
    /// candle-transformers' f32 `BertModel` on a padded batch with an attention mask.
    #[test]
    fn packed_encoder_matches_candle_bert_on_tiny_random_model() {
        use candle_transformers::models::bert::BertModel;
        let dev = Device::Cpu;
        let cfg = Config {
            vocab_size: 50,
            hidden_size: 64,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            intermediate_size: 96,
            max_position_embeddings: 40,
            ..Default::default()
        };
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        let mut t: HashMap<String, Tensor> = HashMap::new();
        let mut seed = 0u64;
        let mut rand = |shape: &[usize], scale: f64, offset: f64| {
            seed += 1;
            let n: usize = shape.iter().product();
            let v: Vec<f32> = (0..n)
                .map(|j| {
                    let x = ((j as u64 * 2_654_435_761 + seed * 40_503) % 10_007) as f64 / 10_007.0;
                    (offset + scale * (x - 0.5)) as f32
                })
                .collect();
            Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
        };
        t.insert(
            "embeddings.word_embeddings.weight".into(),
            rand(&[50, h], 2.0, 0.0),
        );
        t.insert(
            "embeddings.position_embeddings.weight".into(),
            rand(&[40, h], 1.0, 0.0),
        );
        t.insert(
            "embeddings.token_type_embeddings.weight".into(),
            rand(&[2, h], 1.0, 0.0),
        );
        let ln = |t: &mut HashMap<String, Tensor>,
                  p: &str,
                  rand: &mut dyn FnMut(&[usize], f64, f64) -> Tensor| {
            t.insert(format!("{p}.weight"), rand(&[h], 0.5, 1.0));
            t.insert(format!("{p}.bias"), rand(&[h], 0.2, 0.0));
        };
        ln(&mut t, "embeddings.LayerNorm", &mut rand);
        for l in 0..cfg.num_hidden_layers {
            let p = format!("encoder.layer.{l}");
            for (name, o, inp) in [
                ("attention.self.query", h, h),
                ("attention.self.key", h, h),
                ("attention.self.value", h, h),
                ("attention.output.dense", h, h),
                ("intermediate.dense", i, h),
                ("output.dense", h, i),
            ] {
                let sc = 2.0 / (inp as f64).sqrt();
                t.insert(format!("{p}.{name}.weight"), rand(&[o, inp], sc, 0.0));
                t.insert(format!("{p}.{name}.bias"), rand(&[o], 0.2, 0.0));
            }
            ln(
                &mut t,
                &format!("{p}.attention.output.LayerNorm"),
                &mut rand,
            );
            ln(&mut t, &format!("{p}.output.LayerNorm"), &mut rand);
        }
        let vb = VarBuilder::from_tensors(t, DType::F32, &dev);
        let engine = bert::Bert::load(vb.clone(), &cfg).unwrap();
        let reference = BertModel::load(vb, &cfg).unwrap();
        let seqs: Vec<Vec<u32>> = vec![
            vec![1, 7, 9, 3, 2],
            (0..33).map(|j| (j * 7 % 50) as u32).collect(),
            vec![4],
            vec![],
            (0..17).map(|j| (j * 3 % 50) as u32).collect(),
        ];
        let got = engine.embed(&seqs).unwrap();
        // Reference: one padded batch with a mask, mean pooling over the mask, L2 norm.
        let (b, len) = (seqs.len(), 33);
        let mut ids = vec![0u32; b * len];
        let mut mask = vec![0u32; b * len];
        for (r, s) in seqs.iter().enumerate() {
            ids[r * len..r * len + s.len()].copy_from_slice(s);
            mask[r * len..r * len + s.len()].fill(1);
        }
        let ids = Tensor::from_vec(ids, (b, len), &dev).unwrap();
        let mask = Tensor::from_vec(mask, (b, len), &dev).unwrap();
        let hidden = reference
            .forward(&ids, &ids.zeros_like().unwrap(), Some(&mask))
            .unwrap();
        let maskf = mask.to_dtype(DType::F32).unwrap().unsqueeze(2).unwrap();
        let mean = hidden
            .broadcast_mul(&maskf)
            .unwrap()
            .sum(1)
            .unwrap()
            .broadcast_div(&maskf.sum(1).unwrap().clamp(1e-9, f64::INFINITY).unwrap())
            .unwrap();
        let want: Vec<Vec<f32>> = mean.to_vec2().unwrap();
        for (r, (g, w)) in got.iter().zip(&want).enumerate() {
            let nw = w.iter().map(|v| v * v).sum::<f32>().sqrt();
            if seqs[r].is_empty() {
                assert!(g.iter().all(|v| *v == 0.0), "empty sequence gives zeros");
                continue;
            }
            let ng = g.iter().map(|v| v * v).sum::<f32>().sqrt();
            assert!((ng - 1.0).abs() < 1e-4, "row {r} normalized: {ng}");
            let cos = g.iter().zip(w).map(|(a, b)| a * b).sum::<f32>() / nw;
            assert!(
                cos > 0.9995,
                "row {r}: cosine {cos} against candle's BertModel"
            );
        }
        // Out-of-range input is an error, not a panic.
        assert!(engine.embed(&[vec![50]]).is_err());
        assert!(engine.embed(&[vec![1; 41]]).is_err());
    }

    #[test]
    fn select_rows() {
        let e = Embeddings::new(3, 2, vec![1., 2., 3., 4., 5., 6.]);
        assert_eq!(e.select(&[2, 0]).data, vec![5., 6., 1., 2.]);
    }
}
