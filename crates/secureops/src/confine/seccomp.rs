//! The system-call filter of `run` (to be written).
