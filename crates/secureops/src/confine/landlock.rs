//! The Landlock layer of `run` (to be written).
