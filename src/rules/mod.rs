//! The small languages of the productions file, compiled when the file is
//! loaded: router conditions and transforms ([`route`]), and
//! ReplyCodeActions ([`reply_actions`]). They depend on [`crate::hl7`]
//! only, so the configuration loader can compile them while it reads the
//! file, and a mistake in one is reported like any other configuration
//! error: file, path, line and column.

pub mod reply_actions;
pub mod route;
