//! The signaling client. (being written)
