//! The harness the end-to-end tests share, in four parts re-exported
//! here: [`crate::process`] (the real binaries as children, waiting on
//! conditions), [`crate::fixtures`] (config heads, the example configs),
//! [`crate::dns`] (a small blocking DNS client, and `dig`) and
//! [`crate::bed`] (resolver configs built section by section, and a
//! resolver started on one with its members).

pub use crate::bed::*;
pub use crate::dns::*;
pub use crate::fixtures::*;
pub use crate::process::*;
