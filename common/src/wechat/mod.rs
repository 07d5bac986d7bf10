//! The WeChat official-account protocol as Ferry uses it (see WECHAT.md):
//! request signatures, message encryption for safe/compatible mode, and the
//! XML bodies pushed to us and sent back. Pure functions and types, no I/O,
//! so the API server, the worker and the simulator share one implementation.

pub mod crypto;
pub mod message;
pub mod signature;

pub use crypto::{CryptoError, MessageCrypt};
pub use message::{
    Envelope, Incoming, IncomingKind, MAX_BODY_BYTES, MessageError, encrypted_reply, parse,
    parse_encrypted_envelope, passive_text_reply, text_message_xml,
};
pub use signature::{sign, verify};
