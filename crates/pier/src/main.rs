//! The `pier` binary.
fn main() {}
