//! Logging in to the upstream server: SCRAM-SHA-256 (pgwire's sans-IO client), md5, cleartext
//! and trust, whichever the server asks for.

use bytes::BytesMut;
use pgwire::api::auth::sasl::scram::ScramClientAuth;

use super::{ServerConn, ServerError};
use crate::net::frame::body;
use crate::protocol::backend as be;

fn password_message(payload: &[u8]) -> BytesMut {
    let mut out = BytesMut::new();
    crate::net::messages::password(&mut out, payload);
    out
}

fn need<'a>(password: Option<&'a str>, method: &str) -> Result<&'a str, ServerError> {
    password.ok_or_else(|| ServerError::Auth(format!("the server asks for {method} but no password is configured")))
}

/// The answer to AuthenticationMD5Password (`data`: its salt).
fn md5_payload(pw: &str, user: &str, data: &[u8]) -> Result<Vec<u8>, ServerError> {
    let salt: [u8; 4] =
        data.get(..4).and_then(|s| s.try_into().ok()).ok_or_else(|| ServerError::Protocol("short md5 salt".into()))?;
    let stored = crate::config::secrets::md5_stored(pw, user);
    let mut payload = crate::config::secrets::md5_response(&stored, &salt).into_bytes();
    payload.push(0);
    Ok(payload)
}

/// Runs the authentication exchange until AuthenticationOk.
pub async fn login(conn: &mut ServerConn, user: &str, password: Option<&str>) -> Result<(), ServerError> {
    let mut scram_first = None;
    let mut scram_final = None;
    loop {
        let (tag, frame) = conn.read_message().await?;
        match tag {
            be::ERROR_RESPONSE => return Err(ServerError::from_error_frame(frame)),
            be::AUTHENTICATION => {}
            be::NEGOTIATE_PROTOCOL_VERSION | be::NOTICE_RESPONSE => continue,
            other => return Err(ServerError::Protocol(format!("{:?} during authentication", other as char))),
        }
        let b = body(&frame);
        if b.len() < 4 {
            return Err(ServerError::Protocol("short Authentication message".into()));
        }
        let data = &b[4..];
        match i32::from_be_bytes([b[0], b[1], b[2], b[3]]) {
            0 => return Ok(()),
            3 => {
                let mut payload = need(password, "a cleartext password")?.as_bytes().to_vec();
                payload.push(0);
                conn.send(&password_message(&payload)).await?;
            }
            5 => conn.send(&password_message(&md5_payload(need(password, "an md5 password")?, user, data)?)).await?,
            10 => {
                let pw = need(password, "SCRAM-SHA-256")?;
                let offered = String::from_utf8_lossy(data);
                if !offered.split('\0').any(|m| m == "SCRAM-SHA-256") {
                    return Err(ServerError::Auth(format!("unsupported SASL mechanisms {offered:?}")));
                }
                let (first, next) = ScramClientAuth::new(user.to_string(), pw.to_string())
                    .build_client_first()
                    .map_err(|e| ServerError::Auth(e.to_string()))?;
                let mut payload = b"SCRAM-SHA-256\0".to_vec();
                payload.extend_from_slice(&(first.len() as i32).to_be_bytes());
                payload.extend_from_slice(first.as_bytes());
                conn.send(&password_message(&payload)).await?;
                scram_first = Some(next);
            }
            11 => {
                let state =
                    scram_first.take().ok_or_else(|| ServerError::Protocol("unexpected SASLContinue".into()))?;
                let (fin, next) = state.build_client_final(data).map_err(|e| ServerError::Auth(e.to_string()))?;
                conn.send(&password_message(fin.as_bytes())).await?;
                scram_final = Some(next);
            }
            12 => {
                let state = scram_final.take().ok_or_else(|| ServerError::Protocol("unexpected SASLFinal".into()))?;
                state.verify_server_final(data).map_err(|e| ServerError::Auth(e.to_string()))?;
            }
            code => return Err(ServerError::Auth(format!("unsupported authentication request {code}"))),
        }
    }
}
