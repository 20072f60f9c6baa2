//! Fuzz target: arbitrary bytes (read as lossy UTF-8) through the SQL lexer,
//! the classifier and `deallocate_target`. They must never panic, never
//! loop, and keep their invariants. Pure: no I/O here.

#![no_main]

use libfuzzer_sys::fuzz_target;
use pggate::sql::{classify, deallocate_target, Kind, Lexer};

fuzz_target!(|data: &[u8]| {
    let sql = String::from_utf8_lossy(data);

    let mut lexer = Lexer::new(&sql);
    let mut last = 0;
    while let Some(token) = lexer.next_token() {
        assert!(!token.text.is_empty());
        assert!(lexer.offset() > last);
        last = lexer.offset();
    }
    assert_eq!(lexer.offset(), sql.len());

    let write_functions = ["audit_touch".to_owned(), "app.bump".to_owned()];
    let c = classify(&sql, &write_functions);
    if c.pin.is_some() {
        assert_eq!(c.kind, Kind::Write);
    }
    for reads_to_primary in [false, true] {
        if c.wants_replica(reads_to_primary) {
            assert!(matches!(
                c.kind,
                Kind::Read | Kind::Begin { read_only: true }
            ));
        }
    }
    let _ = deallocate_target(&sql);
});
