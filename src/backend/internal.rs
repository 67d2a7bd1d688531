//! Queries pgpilot runs on a server connection for itself; their replies never reach a client.

use bytes::BytesMut;

use super::{ServerConn, ServerError};
use crate::net::frame::body;
use crate::net::messages;
use crate::protocol::backend as be;

pub type Row = Vec<Option<String>>;

impl ServerConn {
    /// Runs a simple query to completion and returns the text rows; the connection is idle again
    /// afterwards even when the query failed (the error comes back after ReadyForQuery).
    pub async fn run_internal(&mut self, sql: &str) -> Result<Vec<Row>, ServerError> {
        let mut out = BytesMut::new();
        messages::query(&mut out, sql);
        self.unnamed = 0; // a simple query drops the unnamed statement
        self.send(&out).await?;
        let mut rows = Vec::new();
        let mut failure = None;
        loop {
            let (tag, frame) = self.read_message().await?;
            match tag {
                be::DATA_ROW => rows.push(decode_text_row(body(&frame))?),
                be::PARAMETER_STATUS => self.note_parameter(body(&frame)),
                be::ERROR_RESPONSE => failure = Some(ServerError::from_error_frame(frame)),
                be::READY_FOR_QUERY => {
                    let idle = body(&frame).first() == Some(&be::tx_status::IDLE);
                    return match failure {
                        Some(err) => Err(err),
                        None if !idle => Err(ServerError::Protocol("internal query left a transaction open".into())),
                        None => Ok(rows),
                    };
                }
                be::ROW_DESCRIPTION
                | be::COMMAND_COMPLETE
                | be::NOTICE_RESPONSE
                | be::EMPTY_QUERY_RESPONSE
                | be::NOTIFICATION_RESPONSE => {}
                other => return Err(ServerError::Protocol(format!("{:?} in an internal query", other as char))),
            }
        }
    }
}

fn decode_text_row(b: &[u8]) -> Result<Row, ServerError> {
    let bad = || ServerError::Protocol("malformed DataRow".into());
    let n = i16::from_be_bytes([*b.first().ok_or_else(bad)?, *b.get(1).ok_or_else(bad)?]);
    let mut rest = &b[2..];
    let mut row = Vec::with_capacity(n.max(0) as usize);
    for _ in 0..n {
        let len_bytes: [u8; 4] = rest.get(..4).and_then(|s| s.try_into().ok()).ok_or_else(bad)?;
        let len = i32::from_be_bytes(len_bytes);
        rest = &rest[4..];
        if len < 0 {
            row.push(None);
            continue;
        }
        let v = rest.get(..len as usize).ok_or_else(bad)?;
        row.push(Some(String::from_utf8_lossy(v).into_owned()));
        rest = &rest[len as usize..];
    }
    Ok(row)
}
