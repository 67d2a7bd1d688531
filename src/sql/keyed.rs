//! Which rows a statement touches, when its text alone says so: a read or write of one table
//! whose WHERE has `column = $n` as a top-level conjunct, or an INSERT whose VALUES give a column
//! by parameter. The result cache turns the parameter's value into a per-key invalidation scope
//! once it knows the column is the table's primary key (`cache::scopes`); anything this module
//! does not recognise is simply not keyed, so invalidation stays table-level.
//!
//! Only bound parameters are read here: literals are normalized away in the shape-cached
//! analysis (the drivers the MCP servers use, asyncpg, psycopg 3, SQLAlchemy, bind their values);
//! a simple Query's literal key is found in its text by `literal_key`, at the position each
//! `Bound` keeps.

use std::sync::Arc;

use pg_query::protobuf::node::Node as N;
use pg_query::protobuf::{self as pb, AExprKind, BoolExprType, OnConflictAction, SetOperation};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Read,
    Update,
    Delete,
    Insert,
}

/// How the server will read a parameter's bytes when the statement casts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cast {
    /// No cast: the parameter takes the declared or the column's type.
    None,
    Int,
    Uuid,
    Text,
}

/// A column given by a parameter: compared for equality (read, update, delete) or inserted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bound {
    pub column: Arc<str>,
    /// 1-based parameter number.
    pub param: u16,
    pub cast: Cast,
    /// In a simple Query: which literal of the text gives this column (`literal_key`).
    pub literal: Option<super::literal_key::Position>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keyed {
    pub op: Op,
    /// Unqualified table name.
    pub table: Arc<str>,
    /// Read / update / delete: equality conjuncts. Insert: each VALUES row's parameters.
    pub bound: Vec<Bound>,
    /// Insert: how many VALUES rows (each must give the key by parameter).
    pub rows: usize,
    /// Columns an UPDATE (or an INSERT's ON CONFLICT DO UPDATE) assigns.
    pub sets: Vec<Arc<str>>,
    /// Insert: ON CONFLICT target columns (None: no conflict clause or DO NOTHING).
    pub conflict: Option<Vec<Arc<str>>>,
    /// Insert with ON CONFLICT DO UPDATE but no column target (ON CONSTRAINT): not keyed.
    pub opaque_conflict: bool,
}

/// The keyed shape of one statement, if it has one. `selects`: how many SELECT keywords its
/// normalized text holds (a read with a subquery anywhere may depend on other rows).
pub fn of(sql: &str, selects: usize) -> Option<Keyed> {
    let parsed = pg_query::parse(sql, 0).ok()?;
    let [raw] = parsed.protobuf.stmts.as_slice() else { return None };
    match raw.stmt.as_ref()?.node.as_ref()? {
        N::SelectStmt(s) if selects == 1 => read(s),
        N::UpdateStmt(u) => update(u),
        N::DeleteStmt(d) => delete(d),
        N::InsertStmt(i) => insert(i),
        _ => None,
    }
}

fn read(s: &pb::SelectStmt) -> Option<Keyed> {
    let plain = s.with_clause.is_none()
        && s.op == SetOperation::SetopNone as i32
        && s.into_clause.is_none()
        && s.values_lists.is_empty()
        && s.locking_clause.is_empty();
    let [from] = s.from_clause.as_slice() else { return None };
    let Some(N::RangeVar(rv)) = from.node.as_ref() else { return None };
    if !plain {
        return None;
    }
    let bound = conjuncts(s.where_clause.as_deref())?;
    keyed(Op::Read, rv, bound)
}

fn update(u: &pb::UpdateStmt) -> Option<Keyed> {
    if u.with_clause.is_some() || !u.from_clause.is_empty() {
        return None;
    }
    let mut k = keyed(Op::Update, u.relation.as_ref()?, conjuncts(u.where_clause.as_deref())?)?;
    k.sets = assigned(&u.target_list)?;
    Some(k)
}

fn delete(d: &pb::DeleteStmt) -> Option<Keyed> {
    if d.with_clause.is_some() || !d.using_clause.is_empty() {
        return None;
    }
    keyed(Op::Delete, d.relation.as_ref()?, conjuncts(d.where_clause.as_deref())?)
}

fn insert(i: &pb::InsertStmt) -> Option<Keyed> {
    if i.with_clause.is_some() {
        return None;
    }
    let columns: Vec<Arc<str>> = i.cols.iter().map(res_target_name).collect::<Option<_>>()?;
    let Some(N::SelectStmt(values)) = i.select_stmt.as_ref()?.node.as_ref() else { return None };
    if values.values_lists.is_empty() || values.with_clause.is_some() {
        return None; // INSERT ... SELECT: its keys are not in the text
    }
    let mut bound = Vec::new();
    for row in &values.values_lists {
        let Some(N::List(list)) = row.node.as_ref() else { return None };
        if list.items.len() != columns.len() {
            return None;
        }
        for (column, item) in columns.iter().zip(&list.items) {
            if let Some((param, cast)) = parameter(item) {
                bound.push(Bound { column: column.clone(), param, cast, literal: None });
            }
        }
    }
    let mut k = keyed(Op::Insert, i.relation.as_ref()?, bound)?;
    k.rows = values.values_lists.len();
    if let Some(c) = &i.on_conflict_clause {
        if c.action == OnConflictAction::OnconflictUpdate as i32 {
            let target = c.infer.as_ref().filter(|inf| inf.conname.is_empty());
            match target {
                Some(inf) => k.conflict = Some(inf.index_elems.iter().map(index_column).collect::<Option<_>>()?),
                None => k.opaque_conflict = true,
            }
            k.sets = assigned(&c.target_list)?;
        }
    }
    Some(k)
}

fn keyed(op: Op, rv: &pb::RangeVar, bound: Vec<Bound>) -> Option<Keyed> {
    if rv.relname.is_empty() {
        return None;
    }
    let table = super::names::intern(&rv.relname);
    Some(Keyed { op, table, bound, rows: 1, sets: Vec::new(), conflict: None, opaque_conflict: false })
}

/// `col = $n` (or `$n = col`) in the top-level AND of a WHERE clause; other conjuncts ignored.
fn conjuncts(w: Option<&pb::Node>) -> Option<Vec<Bound>> {
    let mut out = Vec::new();
    let mut stack = vec![w?];
    while let Some(n) = stack.pop() {
        match n.node.as_ref()? {
            N::BoolExpr(b) if b.boolop == BoolExprType::AndExpr as i32 => stack.extend(b.args.iter()),
            N::AExpr(e) if e.kind == AExprKind::AexprOp as i32 && is_equals(&e.name) => {
                let (l, r) = (e.lexpr.as_deref()?, e.rexpr.as_deref()?);
                let found = match (column(l), parameter(r), column(r), parameter(l)) {
                    (Some(c), Some((p, cast)), _, _) | (_, _, Some(c), Some((p, cast))) => Some((c, p, cast)),
                    _ => None,
                };
                if let Some((column, param, cast)) = found {
                    out.push(Bound { column, param, cast, literal: None });
                }
            }
            _ => {}
        }
    }
    Some(out)
}

fn is_equals(name: &[pb::Node]) -> bool {
    // `=` or `OPERATOR(pg_catalog.=)`
    matches!(name.last().and_then(|n| n.node.as_ref()), Some(N::String(s)) if s.sval == "=")
        && (name.len() == 1 || matches!(name[0].node.as_ref(), Some(N::String(s)) if s.sval == "pg_catalog"))
}

/// The column a reference names (its last field; the table qualifier is the statement's one table).
fn column(n: &pb::Node) -> Option<Arc<str>> {
    let Some(N::ColumnRef(c)) = n.node.as_ref() else { return None };
    match c.fields.last()?.node.as_ref()? {
        N::String(s) => Some(Arc::from(s.sval.as_str())),
        _ => None,
    }
}

/// `$n`, bare or cast to a type whose parameter bytes pgpilot can read.
fn parameter(n: &pb::Node) -> Option<(u16, Cast)> {
    match n.node.as_ref()? {
        N::ParamRef(p) => Some((u16::try_from(p.number).ok()?, Cast::None)),
        N::TypeCast(tc) => {
            let Some(N::ParamRef(p)) = tc.arg.as_deref()?.node.as_ref() else { return None };
            let ty = tc.type_name.as_ref()?;
            if !ty.array_bounds.is_empty() {
                return None;
            }
            let name = match ty.names.last()?.node.as_ref()? {
                N::String(s) => s.sval.as_str(),
                _ => return None,
            };
            let cast = match name {
                "int2" | "int4" | "int8" => Cast::Int,
                "uuid" => Cast::Uuid,
                "text" | "varchar" => Cast::Text,
                _ => return None,
            };
            Some((u16::try_from(p.number).ok()?, cast))
        }
        _ => None,
    }
}

fn res_target_name(n: &pb::Node) -> Option<Arc<str>> {
    match n.node.as_ref()? {
        N::ResTarget(r) if r.indirection.is_empty() && !r.name.is_empty() => Some(Arc::from(r.name.as_str())),
        _ => None,
    }
}

/// The columns a SET list assigns; None for `SET (a, b) = ...` forms pgpilot does not read.
fn assigned(targets: &[pb::Node]) -> Option<Vec<Arc<str>>> {
    targets
        .iter()
        .map(|t| match t.node.as_ref()? {
            N::ResTarget(r) if !r.name.is_empty() => Some(Arc::from(r.name.as_str())),
            _ => None,
        })
        .collect()
}

fn index_column(n: &pb::Node) -> Option<Arc<str>> {
    match n.node.as_ref()? {
        N::IndexElem(e) if e.expr.is_none() && !e.name.is_empty() => Some(Arc::from(e.name.as_str())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(sql: &str) -> Option<Keyed> {
        of(sql, sql.to_ascii_lowercase().matches("select").count())
    }

    fn cols(k: &Keyed) -> Vec<(String, u16)> {
        k.bound.iter().map(|b| (b.column.to_string(), b.param)).collect()
    }

    #[test]
    fn reads_keyed_by_a_parameter() {
        let r = k("SELECT v FROM load_markers WHERE k = $1").unwrap();
        assert_eq!((r.op, &*r.table, cols(&r)), (Op::Read, "load_markers", vec![("k".into(), 1)]));
        let r = k("SELECT * FROM public.work_items w WHERE w.deleted_at IS NULL AND $2::uuid = w.id").unwrap();
        assert_eq!(cols(&r), [("id".into(), 2)]);
        assert_eq!(r.bound[0].cast, Cast::Uuid);
        assert_eq!(cols(&k("SELECT 1 FROM t WHERE a = $1 OR b = $2").unwrap()), vec![], "OR: nothing keyed");
        assert_eq!(cols(&k("SELECT 1 FROM t WHERE a = $1::numeric").unwrap()), vec![], "a cast it cannot read");
        assert!(k("SELECT * FROM t WHERE id = $1 AND x IN (SELECT y FROM t)").is_none(), "a subquery");
        assert!(k("SELECT * FROM t JOIN u ON true WHERE id = $1").is_none(), "a join");
        assert!(k("SELECT * FROM t WHERE id = $1 UNION SELECT * FROM t").is_none());
        assert!(k("WITH x AS (SELECT 1) SELECT * FROM t WHERE id = $1").is_none());
        assert!(k("SELECT * FROM t WHERE id = $1 FOR UPDATE").is_none());
        assert!(k("SELECT * FROM t WHERE id = $1; SELECT 1").is_none(), "two statements");
    }

    #[test]
    fn writes_keyed_by_a_parameter() {
        let u = k("UPDATE work_items SET status = $1, version = $2 WHERE id = $3 AND version = $4").unwrap();
        assert_eq!((u.op, cols(&u)), (Op::Update, vec![("version".into(), 4), ("id".into(), 3)]));
        assert_eq!(u.sets.iter().map(|s| &**s).collect::<Vec<_>>(), ["status", "version"]);
        assert!(k("UPDATE t SET a = 1 FROM u WHERE t.id = u.id").is_none());
        let d = k("DELETE FROM t WHERE id = $1 RETURNING *").unwrap();
        assert_eq!((d.op, cols(&d)), (Op::Delete, vec![("id".into(), 1)]));
        let i =
            k("INSERT INTO load_markers (k, v) VALUES ($1, $2) ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v").unwrap();
        assert_eq!((i.op, i.rows, cols(&i)), (Op::Insert, 1, vec![("k".into(), 1), ("v".into(), 2)]));
        assert_eq!(i.conflict, Some(vec![Arc::from("k")]));
        let many = k("INSERT INTO t (id, v) VALUES ($1, $2), ($3, now())").unwrap();
        assert_eq!((many.rows, cols(&many).len()), (2, 3));
        assert!(
            k("INSERT INTO t (id) VALUES ($1) ON CONFLICT ON CONSTRAINT c DO UPDATE SET id = 1")
                .unwrap()
                .opaque_conflict
        );
        assert!(k("INSERT INTO t SELECT * FROM u").is_none());
        assert!(k("INSERT INTO t VALUES ($1)").is_none(), "no column list");
    }
}
