//! The library half of the `secureops` package: the configuration loader
//! only, so that the fuzz targets (`fuzz/`) reach the very code the binary
//! runs. The binary (`src/main.rs`) is the product; nothing here is a
//! stable API.
#![forbid(unsafe_code)]

// The config's fields are the TOML keys, documented in the README and
// PRODUCT.md "Config file"; their doc comments there are the reference.
#[allow(missing_docs)]
pub mod config;
