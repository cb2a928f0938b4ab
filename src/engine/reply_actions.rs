//! ReplyCodeActions.
