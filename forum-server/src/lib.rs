//! System 2 (seed 001), not built yet: the discussion forum whose commands travel over UDP (on the
//! reliable-datagram layer) or TCP, with a TCP side channel for file upload and download.
