//! `anycast-agent`: runs beside each replicated server.
//!
//! It measures the server's time-until-first-read (TUFR), smooths it, writes
//! the probe file the resolver fetches, and pushes significant changes to the
//! zone's authoritative resolver (see `DESIGN.md`, "Metric collection").
//!
//! Not built yet: this crate reserves its place in the workspace. The push
//! and probe-file formats it will speak belong in `anycast-proto`.
