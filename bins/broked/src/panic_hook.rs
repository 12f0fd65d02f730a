//! A panic hook that prints where the panic happened and nothing of what it said.
//!
//! A panic message is built from whatever the code had at hand — a URI, a `Debug` of a driver's
//! options, a value read from stdin — so it may hold a password. The default hook prints it to
//! stderr, where terminals, CI logs and `2>` files keep it; this one prints the file and line
//! only, and no backtrace (a backtrace holds no values, but the location is enough to find the
//! bug, and a fixed format is what the tests check).

/// Replaces the default panic hook for the whole process.
pub(crate) fn install() {
    std::panic::set_hook(Box::new(|info| eprintln!("{}", report(info.location()))));
}

/// The one line the hook prints.
fn report(location: Option<&std::panic::Location<'_>>) -> String {
    let at = location.map_or_else(
        || "an unknown location".to_owned(),
        |l| format!("{}:{}", l.file(), l.line()),
    );
    format!(
        "broked: internal error at {at} (a bug: please report it; the panic message is not \
         shown because it could contain a secret)"
    )
}

/// In debug builds only, `BROKED_DEBUG_PANIC=TEXT` makes the CLI panic with TEXT once its
/// arguments are parsed: the end-to-end test of the hook (tests/cli) runs the real binary.
#[cfg(debug_assertions)]
pub(crate) fn debug_trigger() {
    if let Some(text) = std::env::var_os("BROKED_DEBUG_PANIC") {
        panic!("debug panic: {}", text.to_string_lossy());
    }
}

#[cfg(not(debug_assertions))]
pub(crate) fn debug_trigger() {}

#[cfg(test)]
mod tests {
    #[test]
    fn report_names_the_location_only() {
        let here = std::panic::Location::caller();
        let line = super::report(Some(here));
        assert!(
            line.contains(&format!("{}:{}", here.file(), here.line())),
            "{line}"
        );
        assert!(line.starts_with("broked: internal error at "), "{line}");
        assert!(super::report(None).contains("unknown location"));
    }
}
