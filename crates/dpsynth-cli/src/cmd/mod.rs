//! One module per subcommand; each exposes `Args` (clap) and `run(Args)`.
pub mod account;
pub mod audit;
pub mod bench;
pub mod data;
pub mod evaluate;
pub mod generate;
pub mod report;
pub mod run;
pub mod summary;
pub mod sweep;
pub mod synthesize;
pub mod train;
