//! One session with another peer. (being written)
