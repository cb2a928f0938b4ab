//! The kinds of items: each module runs one kind with the context it is
//! given ([`ItemCtx`]).

mod file_in;
mod file_out;
mod mllp_in;
mod mllp_out;
mod router;

pub(crate) use router::{CompiledRouter, NO_RULE_MATCHED};

pub(crate) use super::context::ItemCtx;
use crate::config::{FileInConfig, FileOutConfig, ItemConfig, ItemKind, MllpInConfig, MllpOutConfig};
use crate::rules::reply_actions::ReplyCodeActions;

/// An item's settings, with rules and reply code actions compiled.
pub(crate) enum ItemSpec {
    MllpIn { config: MllpInConfig, targets: Vec<String> },
    Router(CompiledRouter),
    MllpOut { config: MllpOutConfig, actions: ReplyCodeActions },
    FileIn { config: FileInConfig, targets: Vec<String> },
    FileOut { config: FileOutConfig },
}

impl ItemSpec {
    /// An item's settings, ready to run: the loader has compiled and
    /// checked its rules and reply code actions already.
    pub(crate) fn compile(item: &ItemConfig) -> Self {
        match &item.kind {
            ItemKind::MllpIn(c) => Self::MllpIn { config: c.clone(), targets: item.targets.clone() },
            ItemKind::Router(c) => Self::Router(CompiledRouter::compile(c)),
            ItemKind::MllpOut(c) => Self::MllpOut { config: c.clone(), actions: c.reply_code_actions.clone() },
            ItemKind::FileIn(c) => Self::FileIn { config: c.clone(), targets: item.targets.clone() },
            ItemKind::FileOut(c) => Self::FileOut { config: c.clone() },
        }
    }
}

/// Runs an item until it is cancelled.
pub(crate) async fn run(ctx: ItemCtx) {
    let spec = ctx.spec();
    match &*spec {
        ItemSpec::MllpIn { config, targets } => mllp_in::run(&ctx, config, targets).await,
        ItemSpec::FileIn { config, targets } => {
            ctx.ready(Ok(()));
            file_in::run(&ctx, config, targets).await;
        }
        ItemSpec::Router(router) => {
            ctx.ready(Ok(()));
            router.run(&ctx).await;
        }
        ItemSpec::MllpOut { config, actions } => {
            ctx.ready(Ok(()));
            mllp_out::run(&ctx, config, actions).await;
        }
        ItemSpec::FileOut { config } => {
            ctx.ready(Ok(()));
            file_out::run(&ctx, config).await;
        }
    }
}
