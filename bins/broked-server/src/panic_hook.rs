//! A panic hook that logs where the panic happened and nothing of what it said.
//!
//! A panic message is built from whatever the code had at hand — a request body, a `Debug` of
//! a driver's options — so it may hold a password. The default hook prints it to stderr, which
//! is the server's log; this one logs the file and line only. A panic in a request handler is
//! still answered with a generic 500 (`CatchPanicLayer`), and one in a connection probe with a
//! failed test (`broked-probe`'s registry): the hook only decides what reaches the log.

/// Replaces the default panic hook for the whole process.
pub(crate) fn install() {
    std::panic::set_hook(Box::new(|info| {
        let at = location(info.location());
        // Before the subscriber is set up (argument parsing), stderr is the log.
        if tracing::dispatcher::has_been_set() {
            tracing::error!(location = %at, "{MESSAGE}");
        } else {
            eprintln!("broked-server: {MESSAGE} at {at}");
        }
    }));
}

const MESSAGE: &str = "internal error (a bug: please report it; the panic message is not \
                       logged because it could contain a secret)";

fn location(location: Option<&std::panic::Location<'_>>) -> String {
    location.map_or_else(
        || "an unknown location".to_owned(),
        |l| format!("{}:{}", l.file(), l.line()),
    )
}

/// In debug builds only: with `BROKED_DEBUG_PANIC=TEXT` set, `POST /api/debug/panic` panics
/// inside its handler with TEXT, for the end-to-end test of the hook (tests/e2e). Not routed
/// otherwise, and not in the OpenAPI document.
#[cfg(debug_assertions)]
pub(crate) fn debug_routes<S: Clone + Send + Sync + 'static>() -> Option<axum::Router<S>> {
    let text = std::env::var("BROKED_DEBUG_PANIC").ok()?;
    Some(axum::Router::new().route(
        "/api/debug/panic",
        axum::routing::post(move || async move {
            panic!("debug panic: {text}");
            #[allow(unreachable_code)]
            ()
        }),
    ))
}

#[cfg(not(debug_assertions))]
pub(crate) fn debug_routes<S: Clone + Send + Sync + 'static>() -> Option<axum::Router<S>> {
    None
}

#[cfg(test)]
mod tests {
    #[test]
    fn location_is_file_and_line() {
        let here = std::panic::Location::caller();
        assert_eq!(
            super::location(Some(here)),
            format!("{}:{}", here.file(), here.line())
        );
        assert_eq!(super::location(None), "an unknown location");
    }
}
