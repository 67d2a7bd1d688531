//! Result sets of the admin console: text columns, encoded with pgwire's message types.

use bytes::{BufMut, BytesMut};
use pgwire::messages::data::{DataRow, FieldDescription, RowDescription};
use pgwire::messages::Message;

const TEXT_OID: u32 = 25;

pub struct ResultSet {
    pub columns: Vec<&'static str>,
    pub rows: Vec<Vec<Option<String>>>,
}

impl ResultSet {
    pub fn new(columns: &[&'static str]) -> Self {
        Self { columns: columns.to_vec(), rows: Vec::new() }
    }

    pub fn row(&mut self, values: Vec<String>) {
        self.rows.push(values.into_iter().map(Some).collect());
    }

    /// RowDescription, DataRows and CommandComplete ("SHOW").
    pub fn encode(&self, out: &mut BytesMut) {
        let fields =
            self.columns.iter().map(|c| FieldDescription::new(c.to_string(), 0, 0, TEXT_OID, -1, -1, 0)).collect();
        RowDescription::new(fields).encode(out).expect("encoding RowDescription");
        for row in &self.rows {
            let mut data = BytesMut::new();
            for v in row {
                match v {
                    Some(s) => {
                        data.put_i32(s.len() as i32);
                        data.put_slice(s.as_bytes());
                    }
                    None => data.put_i32(-1),
                }
            }
            DataRow::new(data, row.len() as i16).encode(out).expect("encoding DataRow");
        }
        crate::net::messages::command_complete(out, "SHOW");
    }
}
