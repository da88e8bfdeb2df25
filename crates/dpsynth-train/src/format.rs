//! The prefix-LM training format: `prefix(label) ++ text ++ EOS`, loss on the text only.

use dpsynth_lm::Tokenizer;

use crate::model::Example;
use crate::{Result, TrainError};

/// The default prefix template (the same as `dpsynth-data`'s).
pub const DEFAULT_TEMPLATE: &str = "Write a {label} text:\n";

/// `template` with every `{label}` replaced by `label`.
pub fn format_prefix(template: &str, label: &str) -> String {
    template.replace("{label}", label)
}

/// Check that the template names the label (the generator must be told which label to write).
pub fn validate_template(template: &str) -> Result<()> {
    if template.contains("{label}") {
        Ok(())
    } else {
        Err(TrainError::Config(format!(
            "prompt template {template:?} must contain `{{label}}`"
        )))
    }
}

/// Token ids of the prefix for `label` (with the tokenizer's BOS if it adds one).
pub fn prefix_ids(tok: &Tokenizer, template: &str, label: &str) -> Result<Vec<u32>> {
    Ok(tok.encode(&format_prefix(template, label), true)?)
}

/// One training example: prefix (zero loss weight) + text truncated to `max_tokens` + EOS.
///
/// # Privacy
/// Truncation is a function of the record alone, applied before the record enters
/// DP-SGD; it changes what is learned, not the guarantee (DP holds for arbitrary changes
/// of one record, whatever its length).
pub fn make_example(
    tok: &Tokenizer,
    template: &str,
    label: &str,
    text: &str,
    max_tokens: usize,
    eos: u32,
) -> Result<Example> {
    let mut ids = prefix_ids(tok, template, label)?;
    let n_prefix = ids.len();
    let mut t = tok.encode(text, false)?;
    t.truncate(max_tokens);
    ids.extend(t);
    ids.push(eos);
    Ok(Example { ids, n_prefix })
}
