//! Topic and filter validation, wildcard matching and the subscription index.
