//! Privacy auditing (Steinke, Nasr & Jagielski 2023) — phase 2.
