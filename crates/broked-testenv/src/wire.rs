//! Protocol bytes that test stand-ins of a server answer with.

/// PostgreSQL's `ErrorResponse` for a refused password (SQLSTATE 28P01), as a server sends it
/// after the startup message.
pub fn pg_password_failed() -> Vec<u8> {
    let mut body = Vec::new();
    for (code, text) in [
        (b'S', "FATAL"),
        (b'V', "FATAL"),
        (b'C', "28P01"),
        (b'M', "password authentication failed"),
    ] {
        body.push(code);
        body.extend_from_slice(text.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut msg = vec![b'E'];
    msg.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    msg.extend_from_slice(&body);
    msg
}
