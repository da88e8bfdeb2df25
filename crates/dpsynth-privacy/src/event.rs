//! DP events: a description of what a run does to the private data, independent of any accountant.

use serde::{Deserialize, Serialize};

use crate::error::{check_q, check_sigma, PrivacyError};

/// Which datasets are neighbors, i.e. what unit of data the guarantee protects.
///
/// The accounting math is identical for both: a record-level run samples, clips and noises per
/// record; a user-level run samples users (Poisson, rate q = users per step / number of users),
/// bounds each user's total contribution by the clipping norm, and noises that. The variant is
/// recorded in the privacy ledger so that readers know what "one neighbor" means.
///
/// # Privacy
/// Poisson subsampling amplifies privacy only under add/remove neighbors: the dominating pairs used
/// by both accountants (Mironov, Talwar & Zhang 2019, Sec. 3; Zhu, Dong & Wang 2022, Prop. 30)
/// are those of adding or removing one unit. A replace-one guarantee follows with ε doubled
/// (group privacy of size 2); we do not claim anything tighter for it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Neighboring {
    /// Datasets differ by adding or removing one record (the default; matches Poisson sampling of records).
    #[default]
    AddRemoveRecord,
    /// Datasets differ by adding or removing all records of one user (user-level DP; sample users).
    AddRemoveUser,
}

impl std::fmt::Display for Neighboring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Neighboring::AddRemoveRecord => write!(f, "add/remove one record"),
            Neighboring::AddRemoveUser => write!(f, "add/remove one user"),
        }
    }
}

/// A differentially private event (mechanism), composable into a description of a whole run.
///
/// All mechanisms have sensitivity 1: `noise_multiplier` is the ratio of the noise scale to the
/// sensitivity (Gaussian: standard deviation / L2 sensitivity; Laplace: scale b / L1 sensitivity).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum DpEvent {
    /// Gaussian mechanism, L2 sensitivity 1, noise standard deviation `noise_multiplier`.
    Gaussian {
        /// σ / sensitivity.
        noise_multiplier: f64,
    },
    /// Laplace mechanism, L1 sensitivity 1, noise scale `noise_multiplier` (pure ε = 1/b).
    Laplace {
        /// b / sensitivity.
        noise_multiplier: f64,
    },
    /// The inner event applied to a Poisson subsample (each unit kept independently with probability q).
    PoissonSampled {
        /// q in (0, 1].
        sampling_probability: f64,
        /// The mechanism run on the subsample.
        event: Box<DpEvent>,
    },
    /// The inner event run `count` times (adaptively) on the same data.
    SelfComposed {
        /// The repeated event.
        event: Box<DpEvent>,
        /// How many times (≥ 1; 0 is the no-op).
        count: u64,
    },
    /// Adaptive composition of several events on the same data.
    Composed(Vec<DpEvent>),
}

impl DpEvent {
    /// DP-SGD (or any Poisson-subsampled Gaussian sum): `steps` steps, each Poisson-sampling with
    /// rate `sampling_probability` and adding Gaussian noise with multiplier `noise_multiplier`.
    ///
    /// # Privacy
    /// Valid only when batches are drawn by Poisson sampling (each record independently with
    /// probability q, as `SecureRng::poisson_sample` does), per-example gradients are clipped to
    /// norm C and the noise standard deviation is `noise_multiplier * C` (Abadi et al. 2016;
    /// Mironov, Talwar & Zhang 2019). Shuffled fixed-size batches are NOT covered by this event.
    pub fn dp_sgd(sampling_probability: f64, noise_multiplier: f64, steps: u64) -> DpEvent {
        DpEvent::SelfComposed {
            event: Box::new(DpEvent::PoissonSampled {
                sampling_probability,
                event: Box::new(DpEvent::Gaussian { noise_multiplier }),
            }),
            count: steps,
        }
    }

    /// A dpsynth training run: the label histogram released once with Gaussian noise
    /// `label_sigma` (when `Some`), composed with `steps` DP-SGD steps ([`DpEvent::dp_sgd`]).
    ///
    /// # Privacy
    /// The histogram counts each unit in exactly one bin, so adding or removing a unit changes it
    /// by 1 in L2 (sensitivity 1); the two mechanisms run on the same data and compose adaptively
    /// (the PLD accountant composes them exactly up to its pessimistic discretization).
    pub fn dpsynth_run(
        label_sigma: Option<f64>,
        sampling_probability: f64,
        noise_multiplier: f64,
        steps: u64,
    ) -> DpEvent {
        let mut ev = Vec::new();
        if let Some(s) = label_sigma {
            ev.push(DpEvent::gaussian(s));
        }
        if steps > 0 {
            ev.push(DpEvent::dp_sgd(
                sampling_probability,
                noise_multiplier,
                steps,
            ));
        }
        DpEvent::Composed(ev)
    }

    /// Histogram (or any sensitivity-1 vector query) released once with Gaussian noise σ.
    pub fn gaussian(noise_multiplier: f64) -> DpEvent {
        DpEvent::Gaussian { noise_multiplier }
    }

    /// Checks all parameters recursively (σ > 0 finite, q in (0,1], non-empty compositions).
    pub fn validate(&self) -> Result<(), PrivacyError> {
        match self {
            DpEvent::Gaussian { noise_multiplier } => {
                check_sigma("noise_multiplier", *noise_multiplier)
            }
            DpEvent::Laplace { noise_multiplier } => {
                check_sigma("laplace noise_multiplier", *noise_multiplier)
            }
            DpEvent::PoissonSampled {
                sampling_probability,
                event,
            } => {
                check_q(*sampling_probability)?;
                event.validate()
            }
            DpEvent::SelfComposed { event, .. } => event.validate(),
            DpEvent::Composed(events) => events.iter().try_for_each(|e| e.validate()),
        }
    }

    /// True when the event does nothing (no mechanism ever runs): ε = 0.
    pub fn is_noop(&self) -> bool {
        match self {
            DpEvent::Gaussian { .. } | DpEvent::Laplace { .. } => false,
            DpEvent::PoissonSampled { event, .. } => event.is_noop(),
            DpEvent::SelfComposed { event, count } => *count == 0 || event.is_noop(),
            DpEvent::Composed(events) => events.iter().all(|e| e.is_noop()),
        }
    }
}

impl std::fmt::Display for DpEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DpEvent::Gaussian { noise_multiplier } => write!(f, "Gaussian(σ={noise_multiplier})"),
            DpEvent::Laplace { noise_multiplier } => write!(f, "Laplace(b={noise_multiplier})"),
            DpEvent::PoissonSampled {
                sampling_probability,
                event,
            } => write!(f, "PoissonSampled(q={sampling_probability}, {event})"),
            DpEvent::SelfComposed { event, count } => write!(f, "{count} × {event}"),
            DpEvent::Composed(events) => {
                write!(f, "[")?;
                for (i, e) in events.iter().enumerate() {
                    if i > 0 {
                        write!(f, " ∘ ")?;
                    }
                    write!(f, "{e}")?;
                }
                write!(f, "]")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_round_trip_and_display() {
        let e = DpEvent::Composed(vec![
            DpEvent::gaussian(10.0),
            DpEvent::dp_sgd(0.01, 1.0, 100),
        ]);
        let s = serde_json::to_string(&e).unwrap();
        let back: DpEvent = serde_json::from_str(&s).unwrap();
        assert_eq!(e, back);
        assert!(e
            .to_string()
            .contains("100 × PoissonSampled(q=0.01, Gaussian(σ=1))"));
        let n: Neighboring = serde_json::from_str("\"AddRemoveUser\"").unwrap();
        assert_eq!(n.to_string(), "add/remove one user");
        assert_eq!(Neighboring::default(), Neighboring::AddRemoveRecord);
    }

    #[test]
    fn validation_rejects_bad_parameters() {
        assert!(DpEvent::dp_sgd(0.0, 1.0, 1).validate().is_err());
        assert!(DpEvent::dp_sgd(1.5, 1.0, 1).validate().is_err());
        assert!(DpEvent::dp_sgd(f64::NAN, 1.0, 1).validate().is_err());
        assert!(DpEvent::dp_sgd(0.1, 0.0, 1).validate().is_err());
        assert!(DpEvent::dp_sgd(0.1, -1.0, 1).validate().is_err());
        assert!(DpEvent::dp_sgd(0.1, f64::INFINITY, 1).validate().is_err());
        assert!(DpEvent::dp_sgd(1.0, 1.0, 1).validate().is_ok());
        assert!(DpEvent::dp_sgd(0.1, 1.0, 0).is_noop());
    }
}
