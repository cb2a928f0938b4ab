//! Router rules.
