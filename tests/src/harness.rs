//! The harness the end-to-end tests share, in three parts re-exported
//! here: [`crate::process`] (the real binaries as children, waiting on
//! conditions), [`crate::fixtures`] (config heads, the example configs) and
//! [`crate::dns`] (a small blocking DNS client, and `dig`).

pub use crate::dns::*;
pub use crate::fixtures::*;
pub use crate::process::*;
