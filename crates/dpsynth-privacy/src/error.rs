//! Errors returned by every fallible function of this crate.

/// Everything that can go wrong when accounting, calibrating or auditing.
///
/// Accounting functions never panic and never return a silent `inf`/`NaN`: bad input and
/// unreachable targets come back as one of these variants with a message that says what to change.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PrivacyError {
    /// A parameter is outside its valid range (or NaN / infinite).
    #[error("invalid {name} = {value}: {reason}")]
    InvalidParameter {
        /// Parameter name as the user knows it (e.g. `sampling_probability`).
        name: &'static str,
        /// The offending value.
        value: f64,
        /// What the valid range is.
        reason: String,
    },
    /// The event (or combination of events) is not supported by the requested accountant.
    #[error("unsupported event for the {accountant} accountant: {reason}")]
    Unsupported {
        /// `"RDP"` or `"PLD"`.
        accountant: &'static str,
        /// Why.
        reason: String,
    },
    /// The privacy guarantee is infinite / vacuous for this query (e.g. δ below the
    /// mass the mechanism puts on infinite privacy loss).
    #[error("no finite epsilon: {0}")]
    Unbounded(String),
    /// A target (ε, number of steps, ...) cannot be reached within the searched range.
    #[error("target not reachable: {0}")]
    Unreachable(String),
    /// The computation would need more memory than the safety limit allows.
    #[error("computation too large: {0}")]
    TooLarge(String),
}

impl PrivacyError {
    pub(crate) fn invalid(name: &'static str, value: f64, reason: impl Into<String>) -> Self {
        PrivacyError::InvalidParameter {
            name,
            value,
            reason: reason.into(),
        }
    }
}

/// Checks `0 < delta < 1` (and not NaN).
pub(crate) fn check_delta(delta: f64) -> Result<(), PrivacyError> {
    if !(delta > 0.0 && delta < 1.0) {
        return Err(PrivacyError::invalid(
            "delta",
            delta,
            "must be strictly between 0 and 1 (typically well below 1/dataset size, e.g. 1e-5)",
        ));
    }
    Ok(())
}

/// Checks `epsilon >= 0` and finite.
pub(crate) fn check_epsilon(epsilon: f64) -> Result<(), PrivacyError> {
    if !(epsilon >= 0.0 && epsilon.is_finite()) {
        return Err(PrivacyError::invalid(
            "epsilon",
            epsilon,
            "must be finite and non-negative",
        ));
    }
    Ok(())
}

/// Checks `0 < q <= 1`.
pub(crate) fn check_q(q: f64) -> Result<(), PrivacyError> {
    if !(q > 0.0 && q <= 1.0) {
        return Err(PrivacyError::invalid(
            "sampling_probability",
            q,
            "must be in (0, 1] (batch size / dataset size for Poisson sampling)",
        ));
    }
    Ok(())
}

/// Checks `sigma > 0` and finite.
pub(crate) fn check_sigma(name: &'static str, sigma: f64) -> Result<(), PrivacyError> {
    if !(sigma > 0.0 && sigma.is_finite()) {
        return Err(PrivacyError::invalid(
            name,
            sigma,
            "must be finite and > 0 (noise standard deviation / sensitivity)",
        ));
    }
    Ok(())
}

/// Checks `steps >= 1`.
pub(crate) fn check_steps(steps: u64) -> Result<(), PrivacyError> {
    if steps == 0 {
        return Err(PrivacyError::invalid("steps", 0.0, "must be at least 1"));
    }
    Ok(())
}
