//! Health as pure logic: rise/fall thresholds over a stream of probe outcomes, no I/O.

/// A change of a backend's routable state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    /// The backend now takes traffic.
    Up,
    /// The backend no longer takes traffic.
    Down,
}

/// What the health logic currently believes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// No probe result yet; counts as healthy so traffic flows from the start.
    Unknown,
    /// Routable.
    Up,
    /// Not routable.
    Down,
}

/// Rise/fall state machine, as HAProxy's `rise`/`fall`: `fall` failures in a row take an up backend
/// down, `rise` successes in a row bring a down one back. The first probe result decides at once.
#[derive(Clone, Debug)]
pub struct Health {
    rise: u32,
    fall: u32,
    state: State,
    streak: u32,
}

impl Health {
    /// A new backend in the `Unknown` state. Thresholds below 1 are treated as 1.
    pub fn new(rise: u32, fall: u32) -> Health {
        Health {
            rise: rise.max(1),
            fall: fall.max(1),
            state: State::Unknown,
            streak: 0,
        }
    }

    /// Current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// True when the backend may take traffic.
    pub fn is_healthy(&self) -> bool {
        self.state != State::Down
    }

    /// Feeds one probe outcome; returns the transition it caused, if any.
    pub fn observe(&mut self, ok: bool) -> Option<Transition> {
        match (self.state, ok) {
            (State::Unknown, true) => {
                self.state = State::Up;
                self.streak = 0;
                None
            }
            (State::Unknown, false) => self.go(State::Down, Transition::Down),
            (State::Up, true) | (State::Down, false) => {
                self.streak = 0;
                None
            }
            (State::Up, false) => {
                self.streak += 1;
                (self.streak >= self.fall).then(|| self.go(State::Down, Transition::Down))?
            }
            (State::Down, true) => {
                self.streak += 1;
                (self.streak >= self.rise).then(|| self.go(State::Up, Transition::Up))?
            }
        }
    }

    /// Takes the backend down at once (a request saw it refuse a connection); it must then
    /// pass `rise` probes to come back.
    pub fn force_down(&mut self) -> Option<Transition> {
        if self.state == State::Down {
            self.streak = 0;
            return None;
        }
        self.go(State::Down, Transition::Down)
    }

    fn go(&mut self, state: State, t: Transition) -> Option<Transition> {
        self.state = state;
        self.streak = 0;
        Some(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_result_decides() {
        let mut h = Health::new(2, 3);
        assert!(h.is_healthy());
        assert_eq!(h.observe(true), None);
        assert_eq!(h.state(), State::Up);
        let mut h = Health::new(2, 3);
        assert_eq!(h.observe(false), Some(Transition::Down));
        assert!(!h.is_healthy());
    }

    #[test]
    fn fall_needs_consecutive_failures() {
        let mut h = Health::new(2, 3);
        h.observe(true);
        assert_eq!(h.observe(false), None);
        assert_eq!(h.observe(false), None);
        assert_eq!(h.observe(true), None, "a success resets the streak");
        assert_eq!(h.observe(false), None);
        assert_eq!(h.observe(false), None);
        assert_eq!(h.observe(false), Some(Transition::Down));
        assert_eq!(h.observe(false), None, "no repeated transition");
    }

    #[test]
    fn rise_needs_consecutive_successes() {
        let mut h = Health::new(2, 3);
        h.observe(false);
        assert_eq!(h.observe(true), None);
        assert_eq!(h.observe(false), None, "a failure resets the streak");
        assert_eq!(h.observe(true), None);
        assert_eq!(h.observe(true), Some(Transition::Up));
        assert!(h.is_healthy());
    }

    #[test]
    fn forced_down_must_rise_again() {
        let mut h = Health::new(2, 3);
        h.observe(true);
        assert_eq!(h.force_down(), Some(Transition::Down));
        assert_eq!(h.force_down(), None);
        assert_eq!(h.observe(true), None);
        assert_eq!(h.observe(true), Some(Transition::Up));
    }

    #[test]
    fn thresholds_of_one() {
        let mut h = Health::new(0, 1);
        h.observe(true);
        assert_eq!(h.observe(false), Some(Transition::Down));
        assert_eq!(h.observe(true), Some(Transition::Up));
    }
}
