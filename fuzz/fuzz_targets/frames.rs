//! Hostile bytes on a socket: framed by header as the session frames them (in place, runs of rows, or
//! by the framer's pieces; any chunking the first byte picks), every whole message decoded as the typed client view, and the backend views read over it.
#![no_main]
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use pgpilot::net::frame::{body, Framer, Piece};
use pgpilot::protocol::{backend, frontend};

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, data)) = data.split_first() else { return };
    let chunk = usize::from(chunk).max(1);
    let mut framer = Framer::new(4096);
    let mut buf = BytesMut::new();
    for part in data.chunks(chunk) {
        buf.extend_from_slice(part);
        loop {
            // The session's in-place path first, as it reads client and server bytes.
            if let Some((tag, total)) = framer.whole_in_place(&buf, |t| t != b'D') {
                let (_rows, run) = framer.run_of(b'D', &buf, 4096);
                assert!(run <= buf.len());
                inspect(tag, body(&buf[..total]));
                bytes::Buf::advance(&mut buf, total);
                continue;
            }
            match framer.next(&mut buf, |t| t != b'D') {
                Ok(Some(Piece::Whole { tag, frame })) => inspect(tag, body(&frame)),
                Ok(Some(Piece::Part { .. })) => {}
                Ok(None) => break,
                Err(_) => return, // a bad length ends the connection: what the session does
            }
        }
    }
});

fn inspect(tag: u8, b: &[u8]) {
    let _ = frontend::ClientMessage::decode(tag, b);
    let _ = frontend::target(b);
    for i in 0..3 {
        let _ = frontend::bind_parameter(b, i);
        let _ = frontend::declared_type(b, i);
    }
    let _ = backend::ready_status(b);
    let _ = backend::command_tag(b);
    let _ = backend::command_rows(b);
    let _ = backend::parameter_status(b);
    let _ = backend::field(b, b'C');
    let _ = backend::error_fields(b);
}
