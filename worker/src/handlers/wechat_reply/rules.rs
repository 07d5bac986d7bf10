//! WeChat's rules for how an answer reaches the user, and the fleet-wide
//! state that applies them (`migrations/ferry_wechat.lua`): the
//! customer-service allowance per user action, the rest of an answer kept
//! for 继续, and passive replies for accounts without the customer-service
//! API (ARCHITECTURE.md, "WeChat's allowance, 继续 and passive replies").

use ferry_common::config::ReplyMode;
use ferry_common::fleet::{CsQuota, KeptAnswers, PassiveReplies};
use ferry_common::job::kinds::WeChatReply;
use ferry_common::store::Store;

pub struct ReplyRules {
    pub quota: CsQuota,
    pub kept: KeptAnswers,
    pub passive: PassiveReplies,
    /// `WECHAT_REPLY_MODE`: with `auto`, a 48001 switches the fleet to
    /// passive replies.
    pub mode: ReplyMode,
    /// `FERRY_CONTINUE_KEYWORD` (trimmed).
    pub continue_keyword: String,
    /// `FERRY_CONTINUE_TEXT`, ending the last part sent when more is kept.
    pub continue_text: String,
}

impl ReplyRules {
    pub fn new(
        store: &Store,
        mode: ReplyMode,
        continue_keyword: String,
        continue_text: String,
    ) -> Self {
        Self {
            quota: CsQuota::new(store.clone()),
            kept: KeptAnswers::new(store.clone()),
            passive: PassiveReplies::new(store.clone()),
            mode,
            continue_keyword,
            continue_text,
        }
    }

    /// Whether the user wrote 继续 (asking for what was kept).
    pub(super) fn is_continue(&self, msg: &WeChatReply) -> bool {
        msg.media_id.is_none() && msg.content.trim() == self.continue_keyword
    }
}
