//! Property tests of what reaches the identity code from outside: tokens (whatever a client sends as
//! a bearer), policy members and emails. None may panic, and members print back as they parse.

use proptest::prelude::*;

use crate::principal::{Member, normalize_email};
use crate::tokens::{header_kid, peek};

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Whatever a client sends as a token, reading it never panics.
    #[test]
    fn tokens_never_panic(raw in "\\PC{0,300}", dots in "[A-Za-z0-9_-]{0,40}\\.[A-Za-z0-9_-]{0,200}\\.[A-Za-z0-9_-]{0,40}") {
        let _ = peek(&raw);
        let _ = header_kid(&raw);
        let _ = peek(&dots);
        let _ = header_kid(&dots);
    }

    /// Members never panic and print back as they parse; emails normalize to themselves.
    #[test]
    fn members_round_trip(raw in "\\PC{0,80}") {
        if let Ok(m) = raw.parse::<Member>() {
            let printed = m.to_string();
            prop_assert_eq!(printed.parse::<Member>().ok(), Some(m));
        }
        if let Ok(e) = normalize_email(&raw) {
            prop_assert_eq!(normalize_email(&e).ok(), Some(e.clone()));
        }
    }
}
