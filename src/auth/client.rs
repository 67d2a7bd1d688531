//! Verifying clients: SCRAM-SHA-256 (pgwire's sans-IO server side with a PostgreSQL-style
//! verifier), md5 and trust. Failures all read "password authentication failed", and an unknown
//! user goes through a SCRAM exchange that cannot succeed, so a login reveals nothing else.

use bytes::{Bytes, BytesMut};
use pgwire::api::auth::sasl::scram::ScramServerAuth;
use pgwire::messages::startup::Authentication;
use tokio::io::AsyncWriteExt;

use crate::config::secrets::{md5_response, md5_stored, Verifier};
use crate::config::users::Secret;
use crate::config::{AuthMethod, UserConfig};
use crate::net::client_io::read_message;
use crate::net::frame::{body, cstr};
use crate::net::messages;
use crate::net::stream::ClientStream;

/// How to check one login, prepared from the configuration (SCRAM verifiers are cached by the caller).
pub enum Check {
    Trust,
    Md5 {
        stored: String,
    },
    /// (Shared with the cache of verifiers: a login copies the secret once, into pgwire's form.)
    Scram(std::sync::Arc<Verifier>),
    /// Unknown user (or one with no usable secret): a SCRAM exchange that always fails, against
    /// a verifier derived for the name (`secrets::fake_verifier`).
    Refuse(Verifier),
}

impl Check {
    pub fn for_user(
        user: Option<&UserConfig>,
        scram: impl FnOnce(&UserConfig) -> Option<std::sync::Arc<Verifier>>,
        fake: impl FnOnce() -> Verifier,
    ) -> Check {
        let Some(user) = user else { return Check::Refuse(fake()) };
        match (user.auth, user.secret()) {
            (AuthMethod::Trust, _) => Check::Trust,
            (AuthMethod::Md5, Some(Secret::Plain(p))) => Check::Md5 { stored: md5_stored(p, &user.name) },
            (AuthMethod::Md5, Some(Secret::Md5Hash(h))) => Check::Md5 { stored: h.to_string() },
            (AuthMethod::ScramSha256, Some(_)) => scram(user).map_or_else(|| Check::Refuse(fake()), Check::Scram),
            _ => Check::Refuse(fake()),
        }
    }
}

/// Runs the exchange. On success returns the messages that end it (SCRAM's final message and
/// AuthenticationOk), not yet sent: the caller sends them with the session's first replies
/// (ParameterStatus ... ReadyForQuery) in one write, as PostgreSQL does.
pub async fn authenticate(stream: &mut ClientStream, rbuf: &mut BytesMut, check: Check) -> Result<BytesMut, ()> {
    let mut out = BytesMut::new();
    let ok = match check {
        Check::Trust => true,
        Check::Md5 { stored } => md5(stream, rbuf, &stored).await.unwrap_or(false),
        Check::Scram(v) => scram(stream, rbuf, &v, &mut out).await.unwrap_or(false),
        Check::Refuse(v) => {
            let _ = scram(stream, rbuf, &v, &mut out).await;
            false
        }
    };
    if ok {
        messages::auth(&mut out, Authentication::Ok);
        Ok(out)
    } else {
        Err(())
    }
}

async fn send(stream: &mut ClientStream, m: Authentication) -> std::io::Result<()> {
    let mut out = BytesMut::new();
    messages::auth(&mut out, m);
    stream.write_all(&out).await
}

async fn password_message(stream: &mut ClientStream, rbuf: &mut BytesMut) -> std::io::Result<Option<BytesMut>> {
    let (tag, frame) = read_message(stream, rbuf).await?;
    Ok((tag == crate::protocol::frontend::PASSWORD).then_some(frame))
}

async fn md5(stream: &mut ClientStream, rbuf: &mut BytesMut, stored: &str) -> std::io::Result<bool> {
    let salt: [u8; 4] = rand::random();
    send(stream, Authentication::MD5Password(salt.to_vec())).await?;
    let Some(frame) = password_message(stream, rbuf).await? else { return Ok(false) };
    let Some((given, _)) = cstr(body(&frame)) else { return Ok(false) };
    Ok(given == md5_response(stored, &salt).as_bytes())
}

/// SCRAM-SHA-256; on success the server's final message is left in `last` for the caller to send.
async fn scram(
    stream: &mut ClientStream,
    rbuf: &mut BytesMut,
    secret: &Verifier,
    last: &mut BytesMut,
) -> std::io::Result<bool> {
    send(stream, Authentication::SASL(vec!["SCRAM-SHA-256".into()])).await?;
    let Some(frame) = password_message(stream, rbuf).await? else { return Ok(false) };
    // SASLInitialResponse: mechanism\0, int32 length, data
    let Some((mechanism, rest)) = cstr(body(&frame)) else { return Ok(false) };
    if mechanism != b"SCRAM-SHA-256" || rest.len() < 4 {
        return Ok(false);
    }
    let first = &rest[4..];
    let Ok((server_first, waiting)) =
        ScramServerAuth::new().on_client_first_message_with_secret(first, secret.to_secret())
    else {
        return Ok(false);
    };
    send(stream, Authentication::SASLContinue(Bytes::from(server_first.into_bytes()))).await?;
    let Some(frame) = password_message(stream, rbuf).await? else { return Ok(false) };
    match waiting.on_client_final_message(body(&frame)) {
        Ok(server_final) => {
            messages::auth(last, Authentication::SASLFinal(Bytes::from(server_final.into_bytes())));
            Ok(true)
        }
        Err(_) => Ok(false),
    }
}
