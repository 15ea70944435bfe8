//! Condition and Event reasons that both controllers use: one spelling, one place.

/// The spec cannot be read (a value the schema admitted but the parser refuses): `Ready`
/// and `Degraded` say so with the parser's message, one Warning Event too, and the object
/// waits for a change.
pub const INVALID_SPEC: &str = "InvalidSpec";

/// A schedule parses but has no fire time left (`0 0 30 2 *`).
pub const SCHEDULE_NEVER_FIRES: &str = "ScheduleNeverFires";
