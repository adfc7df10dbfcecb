//! `anycast-lab`: the testbed (being built).

fn main() {}
