//! The chat room (seed 003): under construction.
