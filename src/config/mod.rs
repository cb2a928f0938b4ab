//! The productions file.
