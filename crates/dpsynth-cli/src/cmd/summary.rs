//! Shared helpers for subcommands (progress bars, output formatting).
