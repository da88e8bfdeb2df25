//! Label-conditioned prompt prefixes for the prefix-LM training format.
//!
//! A training sequence is `prefix(label) + text + EOS`, and the loss is taken on the text only;
//! to sample, the generator is given `prefix(label)` and continues it. The template is plain text
//! in which every `{label}` is replaced by the label. The default, [`DEFAULT_TEMPLATE`], is
//! `"Write a {label} text:\n"`; e.g. for spamassassin `"Write a spam text:\n"`.

use crate::error::DataError;

/// The default template.
pub const DEFAULT_TEMPLATE: &str = "Write a {label} text:\n";

/// The default template of a built-in recipe, or `None` for an unknown name.
///
/// A template that names the domain (movie review, news article, email) makes the base model
/// write text of the right kind from the first step, so DP fine-tuning only has to teach the
/// rest. The label names and what they mean are the recipe's public schema, not private data:
/// using them in a prompt costs no privacy budget.
///
/// - `rotten-tomatoes` (labels `fresh` / `rotten`): a movie review, fresh = positive, rotten = negative;
/// - `bbc-news` (labels `business`, `entertainment`, `politics`, `sport`, `tech`): a BBC news article about the topic;
/// - `spamassassin` (labels `ham` / `spam`): an email, ham = an ordinary personal or work email, spam = unsolicited bulk email.
pub fn recipe_template(recipe: &str) -> Option<&'static str> {
    Some(match recipe {
        "rotten-tomatoes" => {
            "Write a one-sentence {label} movie review (fresh = positive, rotten = negative):\n"
        }
        "bbc-news" => "Write a BBC news article about {label}:\n",
        "spamassassin" => {
            "Write a {label} email (ham = an ordinary personal or work email, spam = unsolicited bulk email):\n"
        }
        _ => return None,
    })
}

/// [`recipe_template`] for a recipe, else [`DEFAULT_TEMPLATE`] (user datasets).
pub fn default_template_for(recipe: Option<&str>) -> &'static str {
    recipe.and_then(recipe_template).unwrap_or(DEFAULT_TEMPLATE)
}

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
    fn every_recipe_has_a_valid_template_naming_its_domain() {
        for r in crate::recipes::RECIPES {
            let t = recipe_template(r).unwrap_or_else(|| panic!("{r} has no template"));
            validate_template(t).unwrap();
            assert!(t.ends_with('\n'), "{r}: the text starts on a new line");
        }
        assert!(recipe_template("rotten-tomatoes")
            .unwrap()
            .contains("movie review"));
        assert!(recipe_template("bbc-news")
            .unwrap()
            .contains("news article"));
        assert!(recipe_template("spamassassin").unwrap().contains("email"));
        assert_eq!(recipe_template("my-data"), None);
        assert_eq!(default_template_for(None), DEFAULT_TEMPLATE);
        assert_eq!(default_template_for(Some("nope")), DEFAULT_TEMPLATE);
        assert_eq!(
            format_prefix(default_template_for(Some("bbc-news")), "tech"),
            "Write a BBC news article about tech:\n"
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
