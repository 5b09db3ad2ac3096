//! The runtime pieces every server of the workspace shares, so each service crate holds only its
//! own protocol logic:
//!
//! - [`listen`]: a TCP listener with a deep accept queue and `SO_REUSEADDR`;
//! - [`accept`]: the accept loop under a connection limit, which either makes newcomers wait
//!   ([`accept::accept_waiting`]) or hands them to a refusal handler ([`accept::accept_refusing`]),
//!   retrying failed accepts with back-off;
//! - [`shutdown`]: waiting for connection tasks within a grace period;
//! - [`idle`]: a connection's idle timeout, without a timer operation per read;
//! - [`atomic_file`]: replacing a file so that a crash leaves the old or the new content, never a
//!   mixture;
//! - [`fd_limit`]: lifting the open-file limit to the hard limit at start-up, so a server can
//!   hold as many connections as the system allows;
//! - [`password`]: argon2id password hashes and the slow-down after failed log-ins;
//! - [`reliable_udp`]: the tokio driver of the reliable-datagram layer, a client connection or a
//!   listener demultiplexing many peers on one `UdpSocket`;
//! - [`lossy_relay`]: a UDP relay that drops a share of datagrams, for tests and benchmarks of
//!   [`reliable_udp`] over real sockets.

pub mod accept;
pub mod atomic_file;
pub mod connect;
pub mod fd_limit;
pub mod idle;
pub mod listen;
pub mod lossy_relay;
pub mod password;
pub mod reliable_udp;
pub mod shutdown;

pub use accept::{ConnectionLimit, accept_refusing, accept_waiting};
pub use atomic_file::{remove_leftovers, write_atomically};
pub use connect::connect;
pub use idle::IdleTimer;
pub use listen::{LISTEN_BACKLOG, listen, listen_on};
pub use shutdown::drain;
