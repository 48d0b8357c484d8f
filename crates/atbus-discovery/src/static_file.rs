//! The static backend: a TOML file of `[[node]]` tables loaded into a [`MemoryRegistry`].
//!
//! This crate does no I/O, so it parses text: the driver (the CLI's `static:FILE`) reads the
//! file and hands its contents to [`parse_static_records`] or [`MemoryRegistry::from_toml_str`].

use serde::Deserialize;

use crate::memory::MemoryRegistry;
use crate::record::NodeRecord;
use crate::validate::ValidationErrors;

/// Why a static file cannot be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StaticFileError {
    /// Not TOML of the expected shape.
    #[error("static discovery file does not parse: {0}")]
    Toml(#[from] toml::de::Error),
    /// A record breaks the rules.
    #[error("node[{index}] ({name:?}): {errors}")]
    Invalid {
        /// Position of the `[[node]]` table, from 0.
        index: usize,
        /// Its name.
        name: String,
        /// The problems.
        errors: ValidationErrors,
    },
    /// Two tables have the same name.
    #[error("node[{index}]: name {name:?} appears twice")]
    DuplicateName {
        /// Position of the second table, from 0.
        index: usize,
        /// The name.
        name: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StaticFile {
    #[serde(default)]
    node: Vec<NodeRecord>,
}

/// Parses and validates the records of a static discovery file.
pub fn parse_static_records(text: &str) -> Result<Vec<NodeRecord>, StaticFileError> {
    let file: StaticFile = toml::from_str(text)?;
    for (index, r) in file.node.iter().enumerate() {
        if let Err(errors) = r.validate() {
            return Err(StaticFileError::Invalid {
                index,
                name: r.name.clone(),
                errors,
            });
        }
        if file.node[..index].iter().any(|o| o.name == r.name) {
            return Err(StaticFileError::DuplicateName {
                index,
                name: r.name.clone(),
            });
        }
    }
    Ok(file.node)
}

impl MemoryRegistry {
    /// A registry holding the records of a static discovery file (they belong to no handle).
    pub fn from_toml_str(text: &str) -> Result<Self, StaticFileError> {
        let registry = Self::new();
        for (index, r) in parse_static_records(text)?.into_iter().enumerate() {
            let name = r.name.clone();
            registry.put(r).map_err(|errors| StaticFileError::Invalid {
                index,
                name,
                errors,
            })?;
        }
        Ok(registry)
    }
}
