//! The round-trip time estimate and retransmission timeout of RFC 6298.
//!
//! The first sample R sets SRTT = R and RTTVAR = R/2; each later one updates
//! RTTVAR = 3/4 RTTVAR + 1/4 |SRTT - R| and SRTT = 7/8 SRTT + 1/8 R; RTO = SRTT + max(G, 4 RTTVAR),
//! kept between a floor and a cap. A timeout doubles the RTO (up to the cap) until the next
//! sample. Samples come only from packets sent once (Karn's rule): the caller does not offer the
//! others.
//!
//! A sample comes with the peer's ack delay, the time it held the ack since the packet arrived;
//! the delay is taken out of the sample (as QUIC does), unless it is longer than the sample
//! itself, which no honest peer reports: then the raw sample stands. A peer that lies low can at
//! worst bring the RTO to its floor.

use std::time::Duration;

/// The clock granularity G.
const GRANULARITY: Duration = Duration::from_millis(1);

/// SRTT, RTTVAR and the current RTO.
#[derive(Debug, Clone)]
pub struct RttEstimator {
    srtt: Option<Duration>,
    rttvar: Duration,
    rto: Duration,
    min_rto: Duration,
    max_rto: Duration,
}

impl RttEstimator {
    /// An estimator with no sample yet: the RTO is `initial`, always kept in `min..=max`.
    pub fn new(initial: Duration, min_rto: Duration, max_rto: Duration) -> RttEstimator {
        RttEstimator {
            srtt: None,
            rttvar: Duration::ZERO,
            rto: initial.clamp(min_rto, max_rto),
            min_rto,
            max_rto,
        }
    }

    /// Takes a round-trip sample from a packet sent exactly once, whose ack the peer held for
    /// `ack_delay` before sending it.
    pub fn on_sample(&mut self, raw: Duration, ack_delay: Duration) {
        let rtt = raw.checked_sub(ack_delay).unwrap_or(raw);
        match self.srtt {
            None => {
                self.srtt = Some(rtt);
                self.rttvar = rtt / 2;
            }
            Some(srtt) => {
                let deviation = srtt.abs_diff(rtt);
                self.rttvar = self.rttvar * 3 / 4 + deviation / 4;
                self.srtt = Some(srtt * 7 / 8 + rtt / 8);
            }
        }
        let within = self.expected_ack_within().expect("set above");
        self.rto = within.clamp(self.min_rto, self.max_rto);
    }

    /// A retransmission timer expired: back off.
    pub fn on_timeout(&mut self) {
        self.rto = (self.rto * 2).min(self.max_rto);
    }

    /// The retransmission timeout now.
    pub fn rto(&self) -> Duration {
        self.rto
    }

    /// SRTT + max(G, 4 RTTVAR), the RTO before its floor, cap and back-off: how long an ack may
    /// take within the usual variation of the round-trip time. `None` before any sample.
    pub fn expected_ack_within(&self) -> Option<Duration> {
        Some(self.srtt? + (4 * self.rttvar).max(GRANULARITY))
    }

    /// The smoothed round-trip time, once there is a sample.
    pub fn srtt(&self) -> Option<Duration> {
        self.srtt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn follows_rfc_6298() {
        let mut rtt = RttEstimator::new(ms(1000), ms(10), ms(60_000));
        assert_eq!(rtt.rto(), ms(1000));
        rtt.on_sample(ms(100), Duration::ZERO);
        assert_eq!(rtt.srtt(), Some(ms(100)));
        assert_eq!(rtt.rto(), ms(100 + 4 * 50));
        assert_eq!(rtt.expected_ack_within(), Some(ms(300)));
        rtt.on_sample(ms(200), Duration::ZERO);
        // RTTVAR = 3/4*50 + 1/4*100 = 62.5; SRTT = 87.5 + 25 = 112.5
        assert_eq!(rtt.srtt(), Some(Duration::from_micros(112_500)));
        assert_eq!(rtt.rto(), Duration::from_micros(112_500 + 250_000));
    }

    #[test]
    fn timeouts_double_up_to_the_cap_and_the_floor_holds() {
        let mut rtt = RttEstimator::new(ms(50), ms(20), ms(300));
        rtt.on_timeout();
        assert_eq!(rtt.rto(), ms(100));
        rtt.on_timeout();
        rtt.on_timeout();
        assert_eq!(rtt.rto(), ms(300));
        rtt.on_sample(Duration::from_micros(50), Duration::ZERO);
        assert_eq!(rtt.rto(), ms(20), "the floor, suited to loopback");
        assert!(rtt.expected_ack_within() < Some(ms(2)), "no floor there");
    }

    #[test]
    fn the_peers_ack_delay_is_taken_out_unless_it_exceeds_the_sample() {
        let mut rtt = RttEstimator::new(ms(200), ms(1), ms(1000));
        // The ack rode on a reply sent again 400 ms after the request arrived.
        rtt.on_sample(ms(401), ms(400));
        assert_eq!(rtt.srtt(), Some(ms(1)));
        rtt.on_sample(ms(3), ms(5));
        assert_eq!(
            rtt.srtt(),
            Some(Duration::from_micros(1_250)),
            "an impossible delay is ignored: 7/8 x 1 + 1/8 x 3"
        );
    }
}
