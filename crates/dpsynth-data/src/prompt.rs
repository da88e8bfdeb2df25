//! Label-conditioned prompt prefixes for the prefix-LM training format.
//!
//! A training sequence is `prefix(label) + text + EOS`, and the loss is taken on the text only;
//! to sample, the generator is given `prefix(label)` and continues it. The template is plain text
//! in which every `{label}` is replaced by the label. The default, [`DEFAULT_TEMPLATE`], is
//! `"Write a {label} text:\n"`; e.g. for spamassassin `"Write a spam text:\n"`.

use crate::error::DataError;

/// The default template.
pub const DEFAULT_TEMPLATE: &str = "Write a {label} text:\n";

/// Check that a template contains `{label}`.
pub fn validate_template(template: &str) -> Result<(), DataError> {
    if template.contains("{label}") {
        Ok(())
    } else {
        Err(DataError::Template {
            template: template.to_string(),
            msg: "it must contain `{label}` (the generator needs to be told which label to write)"
                .into(),
        })
    }
}

/// The prefix for `label`: `template` with every `{label}` replaced.
///
/// Panics never; a template without `{label}` returns the template unchanged — call
/// [`try_format_prefix`] (or [`validate_template`] once) to get an error instead.
pub fn format_prefix(template: &str, label: &str) -> String {
    template.replace("{label}", label)
}

/// Like [`format_prefix`] but an error if the template lacks `{label}`.
pub fn try_format_prefix(template: &str, label: &str) -> Result<String, DataError> {
    validate_template(template)?;
    Ok(format_prefix(template, label))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substitutes_every_occurrence() {
        assert_eq!(
            format_prefix(DEFAULT_TEMPLATE, "spam"),
            "Write a spam text:\n"
        );
        assert_eq!(
            format_prefix("[{label}] {label}: ", "tech"),
            "[tech] tech: "
        );
    }

    #[test]
    fn missing_placeholder_is_an_error() {
        let e = try_format_prefix("Write a text:", "x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("{label}"), "{e}");
        assert!(try_format_prefix("Topic {label}\n", "x").is_ok());
    }
}
