//! Every `run.toml` key as a flag (`--epsilon 8` sets `privacy.epsilon`), generated from
//! [`dpsynth_report::config::KEYS`] so the file and the flags can never drift apart.

use clap::{Arg, ArgMatches, Command, FromArgMatches};
use dpsynth_report::config::{Kind, KEYS};
use dpsynth_report::Override;

/// The config keys given on the command line, as overrides.
#[derive(Debug, Clone, Default)]
pub struct ConfigFlags {
    pub overrides: Vec<Override>,
}

const HEADING: &str = "Config keys (each also settable in the TOML file as [section] key)";

impl FromArgMatches for ConfigFlags {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        let mut s = ConfigFlags::default();
        s.update_from_arg_matches(m)?;
        Ok(s)
    }
    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        for k in KEYS {
            if let Some(v) = m.get_one::<String>(k.flag) {
                self.overrides.retain(|o| o.key != k.key);
                self.overrides.push(Override::new(k.key, v.clone()));
            }
        }
        Ok(())
    }
}

impl clap::Args for ConfigFlags {
    fn augment_args(cmd: Command) -> Command {
        let mut cmd = cmd;
        for k in KEYS {
            let value = match k.kind {
                Kind::Str => "NAME",
                Kind::Path => "PATH",
                Kind::Int => "N",
                Kind::Float => "X",
                Kind::Bool => "BOOL",
                Kind::StrList => "A,B",
            };
            cmd = cmd.arg(
                Arg::new(k.flag)
                    .long(k.flag)
                    .value_name(value)
                    .help(dpsynth_report::config::flag_help(k))
                    .help_heading(HEADING),
            );
        }
        cmd
    }
    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}
