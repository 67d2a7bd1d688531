//! Result sets of the admin console, encoded with pgwire's message types. Columns carry the type
//! PgBouncer declares for the same column (text, int4, int8, numeric; values always in text
//! format), so tools written against PgBouncer (pgbouncer_exporter through lib/pq) read them alike.

use bytes::{BufMut, BytesMut};
use pgwire::messages::data::{DataRow, FieldDescription, RowDescription};
use pgwire::messages::Message;

/// A column's declared type (PostgreSQL type OIDs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ty {
    Text = 25,
    Int4 = 23,
    Int8 = 20,
    Numeric = 1700,
}

pub struct ResultSet {
    pub columns: Vec<(&'static str, Ty)>,
    pub rows: Vec<Vec<Option<String>>>,
}

impl ResultSet {
    /// Text columns.
    pub fn new(columns: &[&'static str]) -> Self {
        Self { columns: columns.iter().map(|c| (*c, Ty::Text)).collect(), rows: Vec::new() }
    }

    pub fn typed(columns: &[(&'static str, Ty)]) -> Self {
        Self { columns: columns.to_vec(), rows: Vec::new() }
    }

    /// A row with NULLs where values are None.
    pub fn row_opt(&mut self, values: Vec<Option<String>>) {
        self.rows.push(values);
    }

    pub fn row(&mut self, values: Vec<String>) {
        self.rows.push(values.into_iter().map(Some).collect());
    }

    /// RowDescription, DataRows and CommandComplete ("SHOW").
    pub fn encode(&self, out: &mut BytesMut) {
        let fields = self
            .columns
            .iter()
            .map(|(name, ty)| {
                let len = match ty {
                    Ty::Int4 => 4,
                    Ty::Int8 => 8,
                    Ty::Text | Ty::Numeric => -1,
                };
                FieldDescription::new(name.to_string(), 0, 0, *ty as u32, len, -1, 0)
            })
            .collect();
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
