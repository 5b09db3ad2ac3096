//! The signaling server. (being written)
