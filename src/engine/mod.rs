//! The production engine: items, their lifecycle, and the rules and reply
//! handling they apply.

pub mod reply_actions;
pub mod rules;
