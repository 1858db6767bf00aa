//! The end-to-end envelope: keys, keyrings, sealing and opening.
