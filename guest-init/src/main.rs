//! PID 1 of the skiff guest.
fn main() {}
