//! Coordination of the whole fleet through Redis: state that every api and
//! worker process must agree on lives here, never in one process's memory.

pub mod breaker;
pub mod cs_quota;
pub mod kept_answers;
pub mod passive_replies;
pub mod provider_gate;
pub mod rate_limit;
pub mod wechat_token;
pub mod workers;

pub use breaker::{BreakerView, Breakers};
pub use cs_quota::CsQuota;
pub use kept_answers::{Claim, Kept, KeptAnswers};
pub use passive_replies::{Delivered, PassiveReplies};
pub use provider_gate::{
    Admission, BreakerSettings, BreakerState, CallResult, Denial, GateSettings, Pass, ProviderGate,
};
pub use rate_limit::{RateLimit, Verdict};
pub use wechat_token::{TokenCache, TokenError, TokenSource};
pub use workers::{WorkerInfo, WorkerRegistry};
