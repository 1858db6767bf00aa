//! Sealbus reference server.
