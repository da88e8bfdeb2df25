//! Sweeps: the ε × method × dataset grid, one run directory per point, one comparison report.
//!
//! `sweep.toml` is a `run.toml` plus a `[sweep]` section:
//! ```toml
//! [sweep]
//! epsilons = [1, 3, 8, inf]
//! methods = ["lora", "prompt", "full"]
//! datasets = ["rotten-tomatoes"]      # recipes or dataset files
//! dir = "sweeps/rt"
//!
//! [train]                              # every other section: the base config of each run
//! steps = 50
//! ```
//! Every grid point's config is resolved and checked before any run starts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::{self, fmt_eps, ConfigError, Override, Resolved};
use crate::report::doc::{Block, Doc};
use crate::report::view::{fmt_num, RunView, Setting};
use crate::report::{charts, write_doc, Written};
use crate::stage::{write_atomic, StageError};

/// The `[sweep]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepGrid {
    #[serde(default = "default_epsilons")]
    pub epsilons: Vec<f64>,
    #[serde(default = "default_methods")]
    pub methods: Vec<String>,
    #[serde(default = "default_datasets")]
    pub datasets: Vec<String>,
    #[serde(default)]
    pub dir: Option<PathBuf>,
}

fn default_epsilons() -> Vec<f64> {
    vec![1.0, 3.0, 8.0, f64::INFINITY]
}
fn default_methods() -> Vec<String> {
    vec!["lora".into(), "prompt".into(), "full".into()]
}
fn default_datasets() -> Vec<String> {
    vec![crate::defaults::RECIPE.into()]
}

impl Default for SweepGrid {
    fn default() -> Self {
        SweepGrid {
            epsilons: default_epsilons(),
            methods: default_methods(),
            datasets: default_datasets(),
            dir: None,
        }
    }
}

/// One grid point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepPoint {
    pub dataset: String,
    pub method: String,
    /// `None` = ∞.
    pub epsilon: Option<f64>,
    /// Relative to the sweep directory.
    pub dir: PathBuf,
}

/// `SWEEP_DIR/sweep.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepManifest {
    pub points: Vec<SweepPoint>,
}

/// A planned sweep: the directory and each point's resolved config.
#[derive(Debug, Clone)]
pub struct SweepPlan {
    pub dir: PathBuf,
    pub points: Vec<(SweepPoint, Resolved)>,
}

fn is_recipe(d: &str) -> bool {
    config::RECIPES.contains(&d)
}

fn dataset_slug(d: &str) -> String {
    if is_recipe(d) {
        d.to_string()
    } else {
        Path::new(d)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "data".into())
    }
}

/// Plan a sweep from a sweep file (optional) and grid/flag overrides; every point's config is
/// resolved and validated here, before anything runs.
///
/// To save time the DP-SGD baseline is trained once per (dataset, ε) (with the first method)
/// and the non-private ceiling once per dataset; other points skip them.
pub fn plan(
    file: Option<&Path>,
    grid_override: Option<SweepGrid>,
    overrides: &[Override],
) -> Result<SweepPlan, ConfigError> {
    let (mut grid, entries) = match file {
        Some(p) => {
            let mut table = config::read_toml(p)?;
            let grid = match table.remove("sweep") {
                Some(v) => v
                    .try_into::<SweepGrid>()
                    .map_err(|e| ConfigError::Invalid {
                        key: "sweep".into(),
                        origin: p.display().to_string(),
                        msg: e.to_string(),
                    })?,
                None => SweepGrid::default(),
            };
            (grid, config::resolve_table_entries(&table, p)?)
        }
        None => (SweepGrid::default(), Vec::new()),
    };
    if let Some(g) = grid_override {
        grid = g;
    }
    if grid.epsilons.is_empty() || grid.methods.is_empty() || grid.datasets.is_empty() {
        return Err(ConfigError::Invalid {
            key: "sweep".into(),
            origin: "sweep grid".into(),
            msg: "epsilons, methods and datasets must each name at least one value".into(),
        });
    }
    for e in &grid.epsilons {
        if e.is_nan() || *e <= 0.0 {
            return Err(ConfigError::Invalid {
                key: "sweep.epsilons".into(),
                origin: "sweep grid".into(),
                msg: format!("ε must be > 0 (inf for non-private), got {e}"),
            });
        }
    }
    let dir = grid
        .dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("sweeps/default"));
    // One split seed for the whole sweep (fixed by the sweep directory's name, so re-running
    // the sweep resumes with the same split).
    let split_seed = u64::from_str_radix(&crate::stage::hash_str(&dir.to_string_lossy())[..15], 16)
        .expect("hex");
    let mut points = Vec::new();
    let mut baseline_done: Vec<(String, u64)> = Vec::new();
    let mut ceiling_done: Vec<String> = Vec::new();
    for d in &grid.datasets {
        for &e in &grid.epsilons {
            for m in &grid.methods {
                let slug = dataset_slug(d);
                let rel = PathBuf::from(&slug).join(format!("{m}-eps{}", fmt_eps(e)));
                let mut ov: Vec<Override> = overrides.to_vec();
                ov.push(Override::new("privacy.epsilon", fmt_eps(e)));
                ov.push(Override::new("train.method", m.clone()));
                if is_recipe(d) {
                    ov.push(Override::new("data.recipe", d.clone()));
                } else {
                    ov.push(Override::new("data.path", d.clone()));
                }
                ov.push(Override::new("run.dir", dir.join(&rel).to_string_lossy()));
                if !entries.iter().any(|(k, _, _)| k == "data.split_seed")
                    && !overrides.iter().any(|o| o.key == "data.split_seed")
                {
                    // Same split for every point (the split is not secret), so that points
                    // are compared on the same test set.
                    ov.push(Override::new("data.split_seed", split_seed.to_string()));
                }
                let key = (slug.clone(), e.to_bits());
                if baseline_done.contains(&key) {
                    ov.push(Override::new("eval.baseline", "false"));
                } else {
                    baseline_done.push(key);
                }
                if ceiling_done.contains(&slug) {
                    ov.push(Override::new("eval.ceiling", "false"));
                } else {
                    ceiling_done.push(slug.clone());
                }
                let resolved = config::resolve_entries(entries.clone(), &ov)?;
                points.push((
                    SweepPoint {
                        dataset: slug,
                        method: m.clone(),
                        epsilon: e.is_finite().then_some(e),
                        dir: rel,
                    },
                    resolved,
                ));
            }
        }
    }
    Ok(SweepPlan { dir, points })
}

impl SweepPlan {
    /// Write `sweep.json` (what the sweep report reads).
    pub fn write_manifest(&self) -> Result<(), StageError> {
        let m = SweepManifest {
            points: self.points.iter().map(|(p, _)| p.clone()).collect(),
        };
        write_atomic(
            &self.dir.join("sweep.json"),
            &serde_json::to_vec_pretty(&m).expect("manifest serializes"),
        )
    }
}

/// The note every sweep report carries about tuning on private data.
pub const TUNING_NOTE: &str = "Hyperparameter tuning on private data costs privacy too. Each row's (ε, δ) is the guarantee of that one configuration's output. Choosing the best configuration by comparing results computed on private data (the real test set is private data as well) is itself a release that these per-row numbers do not cover. This sweep does not pay for that choice: it trains every configuration independently, reports each with its own guarantee, and gives below the composed guarantee of releasing all runs of a dataset together, which also covers any choice among them made only from those released outputs. To publish just the winner with a smaller ε, pick hyperparameters on public or non-sensitive data, or use a private selection procedure (e.g. Papernot & Steinke, \"Hyperparameter Tuning with Renyi Differential Privacy\", ICLR 2022) and account for it.";

/// Build the comparison document of a sweep directory.
pub fn sweep_doc(dir: &Path) -> Doc {
    let mut doc = Doc::new("dpsynth sweep — downstream accuracy vs ε");
    let manifest: Option<SweepManifest> = std::fs::read_to_string(dir.join("sweep.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    let Some(manifest) = manifest else {
        doc.note(format!(
            "Not run: {} has no readable sweep.json (run `dpsynth sweep` first).",
            dir.display()
        ));
        return doc;
    };
    let runs: Vec<(SweepPoint, RunView)> = manifest
        .points
        .iter()
        .map(|p| (p.clone(), RunView::load(&dir.join(&p.dir))))
        .collect();
    doc.h2("Privacy of a sweep");
    doc.note(TUNING_NOTE);
    let mut datasets: Vec<String> = runs.iter().map(|(p, _)| p.dataset.clone()).collect();
    datasets.dedup();
    let mut rows = Vec::new();
    for d in &datasets {
        // Every point's whole spend (its directory's ledger), composed by the privacy crate.
        let spent: Vec<_> = runs
            .iter()
            .filter(|(p, _)| &p.dataset == d)
            .filter_map(|(_, v)| v.ledger.as_ref().map(|l| l.spent_in_directory()))
            .collect();
        let n = spent.len();
        let all = dpsynth_privacy::compose_sequential(spent);
        rows.push(vec![
            d.clone(),
            n.to_string(),
            fmt_num(all.epsilon),
            format!("{:.0e}", all.delta),
        ]);
    }
    doc.table(
        &[
            "dataset",
            "runs with a ledger",
            "ε of releasing all (composition)",
            "δ",
        ],
        rows,
    );
    for d in &datasets {
        let mut eps: Vec<Option<f64>> = runs
            .iter()
            .filter(|(p, _)| &p.dataset == d)
            .map(|(p, _)| p.epsilon)
            .collect();
        eps.sort_by(|a, b| {
            a.unwrap_or(f64::INFINITY)
                .total_cmp(&b.unwrap_or(f64::INFINITY))
        });
        eps.dedup();
        let x_labels: Vec<String> = eps
            .iter()
            .map(|e| e.map(fmt_eps).unwrap_or("∞".into()))
            .collect();
        let xi = |e: Option<f64>| eps.iter().position(|x| *x == e).unwrap_or(0);
        let mut methods: Vec<String> = runs
            .iter()
            .filter(|(p, _)| &p.dataset == d)
            .map(|(p, _)| p.method.clone())
            .collect();
        methods.sort();
        methods.dedup();
        let mut classifiers: Vec<String> = runs
            .iter()
            .filter(|(p, _)| &p.dataset == d)
            .flat_map(|(_, v)| v.scores.iter().map(|s| s.classifier.clone()))
            .collect();
        classifiers.sort();
        classifiers.dedup();
        doc.h2(d.clone());
        if classifiers.is_empty() {
            doc.note("Not run: no run of this dataset has evaluation results yet.");
        }
        for c in &classifiers {
            let acc = |p: &SweepPoint, v: &RunView, s: Setting| {
                let _ = p;
                v.scores
                    .iter()
                    .find(|x| x.setting == s && &x.classifier == c)
                    .map(|x| x.accuracy)
            };
            let mut series = Vec::new();
            for m in &methods {
                let mut pts: Vec<(usize, f64)> = runs
                    .iter()
                    .filter(|(p, _)| &p.dataset == d && &p.method == m)
                    .filter_map(|(p, v)| acc(p, v, Setting::Synthetic).map(|a| (xi(p.epsilon), a)))
                    .collect();
                pts.sort_by_key(|p| p.0);
                series.push(charts::Series {
                    name: m.clone(),
                    points: pts,
                });
            }
            let mut base: BTreeMap<usize, f64> = BTreeMap::new();
            let mut ceiling = None;
            for (p, v) in runs.iter().filter(|(p, _)| &p.dataset == d) {
                if let Some(a) = acc(p, v, Setting::Baseline) {
                    base.entry(xi(p.epsilon)).or_insert(a);
                }
                if ceiling.is_none() {
                    ceiling = acc(p, v, Setting::Ceiling);
                }
            }
            let baseline = charts::Series {
                name: "DP-SGD on real data (baseline)".into(),
                points: base.iter().map(|(k, v)| (*k, *v)).collect(),
            };
            match charts::accuracy_vs_epsilon(
                &format!("{d}: {c} classifier"),
                &x_labels,
                &series,
                (!baseline.points.is_empty()).then_some(&baseline),
                ceiling,
            ) {
                Ok(svg) => doc.push(Block::Chart {
                    name: format!("accuracy-{d}-{c}"),
                    alt: format!("{d}: accuracy vs ε, {c} classifier"),
                    svg,
                }),
                Err(e) => doc.note(format!("chart failed: {e}")),
            }
            let mut head: Vec<String> = vec!["ε".into()];
            head.extend(methods.iter().map(|m| format!("synthetic ({m})")));
            head.push("DP-SGD baseline".into());
            head.push("real, non-private".into());
            let rows = eps
                .iter()
                .enumerate()
                .map(|(i, e)| {
                    let mut r = vec![x_labels[i].clone()];
                    for s in &series {
                        r.push(
                            s.points
                                .iter()
                                .find(|p| p.0 == i)
                                .map(|p| fmt_num(p.1))
                                .unwrap_or_else(|| "not run".into()),
                        );
                    }
                    r.push(
                        base.get(&i)
                            .map(|a| fmt_num(*a))
                            .unwrap_or_else(|| "—".into()),
                    );
                    r.push(ceiling.map(fmt_num).unwrap_or_else(|| "—".into()));
                    let _ = e;
                    r
                })
                .collect();
            let head_refs: Vec<&str> = head.iter().map(String::as_str).collect();
            doc.table(&head_refs, rows);
        }
    }
    doc.h2("Runs");
    let rows = runs
        .iter()
        .map(|(p, v)| {
            let spent = v
                .ledger
                .as_ref()
                .filter(|l| !l.entries.is_empty())
                .map(|l| fmt_num(l.current().epsilon))
                .unwrap_or_else(|| "—".into());
            let done = crate::stage::STAGES
                .iter()
                .filter(|s| v.stage_status(s) == "done")
                .count();
            vec![
                p.dataset.clone(),
                p.method.clone(),
                p.epsilon.map(fmt_eps).unwrap_or("∞".into()),
                spent,
                format!("{done}/{} stages done", crate::stage::STAGES.len()),
                p.dir.join("report.html").display().to_string(),
            ]
        })
        .collect();
    doc.table(
        &[
            "dataset",
            "method",
            "target ε",
            "ε spent (ledger)",
            "status",
            "run report",
        ],
        rows,
    );
    doc
}

/// Write `report.html` / `report.md` for a sweep directory.
pub fn write_sweep_report(dir: &Path) -> Result<Written, StageError> {
    write_doc(dir, &sweep_doc(dir), "report")
}

/// Is this directory a sweep (has sweep.json)?
pub fn is_sweep_dir(dir: &Path) -> bool {
    dir.join("sweep.json").is_file()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_checks_every_point_and_shares_references() {
        let a = crate::config::tests::fake_assets();
        let ov = vec![Override::new("data.assets", a.path().to_str().unwrap())];
        let p = plan(None, None, &ov).unwrap();
        // Default grid: ε ∈ {1, 3, 8, ∞} × {lora, prompt, full} on one dataset.
        assert_eq!(p.points.len(), 12);
        let baselines = p
            .points
            .iter()
            .filter(|(_, r)| r.config.eval.baseline)
            .count();
        let ceilings = p
            .points
            .iter()
            .filter(|(_, r)| r.config.eval.ceiling)
            .count();
        assert_eq!(baselines, 4, "one DP-SGD baseline per ε");
        assert_eq!(ceilings, 1, "one non-private ceiling per dataset");
        let (pt, r) = &p.points[0];
        assert_eq!(pt.dir, PathBuf::from("rotten-tomatoes/lora-eps1"));
        assert_eq!(
            r.config.run_dir(),
            PathBuf::from("sweeps/default/rotten-tomatoes/lora-eps1")
        );
        assert!(p.points.last().unwrap().1.config.is_non_private());
        // Every point is compared on the same split: one split seed, stable for the directory.
        let seeds: std::collections::BTreeSet<_> = p
            .points
            .iter()
            .map(|(_, r)| r.config.data.split_seed)
            .collect();
        assert_eq!(seeds.len(), 1);
        assert!(seeds.iter().next().unwrap().is_some());
        assert_eq!(
            plan(None, None, &ov).unwrap().points[0]
                .1
                .config
                .data
                .split_seed,
            p.points[0].1.config.data.split_seed
        );
        // A bad point fails the whole plan before anything runs, naming the key.
        let bad = SweepGrid {
            methods: vec!["lora".into(), "adapterz".into()],
            ..Default::default()
        };
        let e = plan(None, Some(bad), &ov).unwrap_err();
        assert_eq!(e.key(), Some("train.method"));
        let bad = SweepGrid {
            epsilons: vec![-1.0],
            ..Default::default()
        };
        assert_eq!(
            plan(None, Some(bad), &ov).unwrap_err().key(),
            Some("sweep.epsilons")
        );
        // A sweep file: [sweep] plus base sections; unknown keys in either are errors.
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("sweep.toml");
        std::fs::write(
            &f,
            "[sweep]\nepsilons = [2, inf]\nmethods = [\"prompt\"]\n[train]\nsteps = 7\n",
        )
        .unwrap();
        let p = plan(Some(&f), None, &ov).unwrap();
        assert_eq!(p.points.len(), 2);
        assert!(p.points.iter().all(|(_, r)| r.config.train.steps == 7));
        std::fs::write(&f, "[sweep]\nepsilon = [2]\n").unwrap();
        assert_eq!(plan(Some(&f), None, &ov).unwrap_err().key(), Some("sweep"));
    }
}
