//! System 4 (seeds 003 and 004), not built yet: the 10-byte-header broadcast chat room, the
//! TCP-versus-UDP file transfer comparison, and peer-to-peer chat with a TCP signaling server.
