//! Result cache against the real server: replies from the cache are byte-identical to the
//! server's, writes seen through pgpilot invalidate at commit (never before, never on rollback),
//! and what must not be cached is not.

mod common;

use common::cache::{cache_status, counter, hits, make_table, text_rows, until_hit, TRUST_USERS};
use common::raw::{self, msg, Raw};
use common::{pg_port, pool_toml, Proxy};

fn describe(kind: u8, name: &str) -> Vec<u8> {
    let mut b = vec![kind];
    b.extend_from_slice(name.as_bytes());
    b.push(0);
    msg(b'D', &b)
}

fn execute_limit(rows: i32) -> Vec<u8> {
    let mut b = vec![0];
    b.extend_from_slice(&rows.to_be_bytes());
    msg(b'E', &b)
}

async fn exchange(r: &mut Raw, bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    r.send(bytes).await;
    r.messages_until_ready().await
}

/// The same conversation, directly and through pgpilot three times: the first may fill the cache,
/// the others must be hits, and every reply must equal the server's byte for byte.
async fn same_bytes(proxy: &Proxy, setup: &[u8], request: &[u8]) {
    let mut direct = Raw::login_trust(pg_port(), "trustuser", "app").await;
    let mut via = Raw::login_trust(proxy.port, "trustuser", "app").await;
    if !setup.is_empty() {
        exchange(&mut direct, setup).await;
        exchange(&mut via, setup).await;
    }
    let expected = exchange(&mut direct, request).await;
    assert!(expected.iter().any(|(t, _)| *t == b'D'), "the request returns rows");
    for round in 0..3 {
        let before = hits(proxy);
        let got = exchange(&mut via, request).await;
        assert_eq!(got, expected, "round {round}");
        if round > 0 {
            assert!(hits(proxy) > before, "round {round} was not answered from the cache");
        }
    }
}

#[tokio::test]
async fn hits_are_byte_identical_in_simple_and_extended_protocol() {
    make_table("cache_exact", 25).await;
    let proxy = Proxy::start(&pool_toml(4, TRUST_USERS));
    let c = proxy.connect_as("trustuser", "", "app").await.unwrap();
    until_hit(&proxy, &c, "SELECT id, v FROM cache_exact WHERE id < 3").await;
    let sql = "SELECT id, v, length(v) FROM cache_exact WHERE id <= 10 ORDER BY id";
    // simple Query
    same_bytes(&proxy, &[], &raw::query(sql)).await;
    // named statement described once, then Bind/Execute/Sync (asyncpg, tokio-postgres)
    let setup = [raw::parse("s1", sql), describe(b'S', "s1"), raw::sync()].concat();
    same_bytes(&proxy, &setup, &[raw::bind("", "s1"), raw::execute(""), raw::sync()].concat()).await;
    // with Describe of the portal (psycopg), and the unnamed statement parsed every time
    let req = [raw::parse("", sql), raw::bind("", ""), describe(b'P', ""), raw::execute(""), raw::sync()].concat();
    same_bytes(&proxy, &[], &req).await;
    // a row limit: PortalSuspended after each batch, then the rest (a cursor's fetch)
    let req = [raw::bind("", "s1"), execute_limit(4), execute_limit(4), execute_limit(4), raw::sync()].concat();
    same_bytes(&proxy, &setup, &req).await;
    // a batch that ends exactly at the last row still suspends; the next Execute says SELECT 0
    let req = [raw::bind("", "s1"), execute_limit(5), execute_limit(5), execute_limit(5), raw::sync()].concat();
    same_bytes(&proxy, &setup, &req).await;
}

#[tokio::test]
async fn tokio_postgres_prepared_statements_hit_and_stay_exact() {
    make_table("cache_tp", 50).await;
    let proxy = Proxy::start(&pool_toml(4, ""));
    let c = proxy.connect("app").await;
    let direct = common::direct("app").await;
    until_hit(&proxy, &c, "SELECT v FROM cache_tp WHERE id = 1").await;
    let sql = "SELECT id, v FROM cache_tp WHERE id BETWEEN $1 AND $2 ORDER BY id";
    let stmt = c.prepare(sql).await.unwrap();
    let want: Vec<(i32, String)> =
        direct.query(sql, &[&5, &15]).await.unwrap().iter().map(|r| (r.get(0), r.get(1))).collect();
    let before = hits(&proxy);
    for _ in 0..5 {
        let got: Vec<(i32, String)> =
            c.query(&stmt, &[&5, &15]).await.unwrap().iter().map(|r| (r.get(0), r.get(1))).collect();
        assert_eq!(got, want);
    }
    assert!(hits(&proxy) >= before + 4, "{}", cache_status(&proxy));
    let other: Vec<i32> = c.query(&stmt, &[&1, &2]).await.unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(other, [1, 2], "other parameters are another entry");
}

#[tokio::test]
async fn commits_invalidate_rollbacks_do_not() {
    make_table("cache_inval", 3).await;
    let proxy = Proxy::start(&pool_toml(4, ""));
    let reader = proxy.connect("app").await;
    let mut writer = proxy.connect("app").await;
    let read = "SELECT v FROM cache_inval WHERE id = 1";
    assert_eq!(until_hit(&proxy, &reader, read).await, ["v1"]);

    // Uncommitted: the old value is right (the server would say the same), and still cached.
    let tx = writer.transaction().await.unwrap();
    tx.execute("UPDATE cache_inval SET v = 'two' WHERE id = 1", &[]).await.unwrap();
    assert_eq!(text_rows(&reader, read).await, ["v1"]);
    tx.commit().await.unwrap();
    assert_eq!(text_rows(&reader, read).await, ["two"], "visible once committed");
    assert_eq!(text_rows(&writer, read).await, ["two"], "and to the writer");

    // Rolled back: nothing invalidated, the next read is a hit.
    assert_eq!(until_hit(&proxy, &reader, read).await, ["two"]);
    let tx = writer.transaction().await.unwrap();
    tx.execute("UPDATE cache_inval SET v = 'three' WHERE id = 1", &[]).await.unwrap();
    tx.rollback().await.unwrap();
    let before = hits(&proxy);
    assert_eq!(text_rows(&reader, read).await, ["two"]);
    assert_eq!(hits(&proxy), before + 1, "a rollback keeps the entry");

    // Autocommit write (extended protocol), a failed implicit transaction, and a simple-Query commit.
    writer.execute("UPDATE cache_inval SET v = 'four' WHERE id = 1", &[]).await.unwrap();
    assert_eq!(text_rows(&reader, read).await, ["four"]);
    assert!(writer.batch_execute("UPDATE cache_inval SET v = 'lost' WHERE id = 1; SELECT 1/0").await.is_err());
    assert_eq!(text_rows(&reader, read).await, ["four"]);
    writer.batch_execute("BEGIN; UPDATE cache_inval SET v = 'five' WHERE id = 1; COMMIT").await.unwrap();
    assert_eq!(text_rows(&reader, read).await, ["five"]);
    // A read inside the writing transaction sees its own write (never the cached value).
    assert_eq!(until_hit(&proxy, &reader, read).await, ["five"]);
    writer.batch_execute("BEGIN; UPDATE cache_inval SET v = 'six' WHERE id = 1").await.unwrap();
    assert_eq!(text_rows(&writer, read).await, ["six"]);
    writer.batch_execute("COMMIT").await.unwrap();
    assert_eq!(text_rows(&reader, read).await, ["six"]);
    // TRUNCATE and DDL through pgpilot.
    writer.batch_execute("TRUNCATE cache_inval").await.unwrap();
    assert!(text_rows(&reader, read).await.is_empty());
    assert!(counter(&proxy, "invalidations") >= 5);
}

/// A write to a table nothing cached depends on bumps no counter (`generations`' watch), so a
/// fill must mark its tables before its query leaves: a commit landing while the fill runs has
/// to find the table watched, or the fill would store the old row and serve it.
#[tokio::test]
async fn a_fill_in_flight_is_not_stored_past_a_commit_to_a_table_nothing_cached_yet() {
    make_table("cache_watch", 3000).await;
    let proxy = Proxy::start(&pool_toml(4, ""));
    let reader = proxy.connect("app").await;
    let writer = proxy.connect("app").await;
    // Slow (a count over a self-join) but cacheable; the table is new to this pgpilot.
    let read = "SELECT v FROM cache_watch WHERE id = 1 AND (SELECT count(*) FROM cache_watch a, cache_watch b) > 0";
    let raced0 = counter(&proxy, "fills_discarded_by_commit");
    let fill = tokio::spawn(async move {
        let started = std::time::Instant::now();
        (text_rows(&reader, read).await, started.elapsed(), reader)
    });
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    writer.batch_execute("UPDATE cache_watch SET v = 'two' WHERE id = 1").await.unwrap();
    let (rows, took, reader) = fill.await.unwrap();
    assert!(took > std::time::Duration::from_millis(150), "the commit landed while the read ran ({took:?})");
    assert_eq!(rows, ["v1"], "the read began before the commit");
    assert_eq!(counter(&proxy, "fills_discarded_by_commit"), raced0 + 1, "the commit found the table watched");
    assert_eq!(text_rows(&reader, read).await, ["two"], "never the row the fill read");
    assert_eq!(until_hit(&proxy, &reader, read).await, ["two"]);
}

#[tokio::test]
async fn volatile_locking_catalog_and_view_reads_are_never_cached() {
    make_table("cache_never", 5).await;
    let d = common::direct("app").await;
    d.batch_execute(
        "CREATE OR REPLACE VIEW cache_never_v AS SELECT * FROM cache_never;
         ALTER VIEW cache_never_v OWNER TO app;
         CREATE OR REPLACE FUNCTION cache_never_f(int) RETURNS int LANGUAGE sql AS 'SELECT $1 + 1';",
    )
    .await
    .unwrap();
    let proxy = Proxy::start(&pool_toml(4, ""));
    let c = proxy.connect("app").await;
    until_hit(&proxy, &c, "SELECT v FROM cache_never WHERE id = 2").await;
    let never = [
        "SELECT v, now() FROM cache_never WHERE id = 1",
        "SELECT v, random() FROM cache_never WHERE id = 1",
        "SELECT v FROM cache_never WHERE id = 1 FOR UPDATE",
        "SELECT v FROM cache_never WHERE id = 1 FOR SHARE",
        "SELECT relname FROM pg_class WHERE relname = 'cache_never'",
        "SELECT v FROM cache_never_v WHERE id = 1",
        "SELECT cache_never_f(id) FROM cache_never WHERE id = 1",
        "SELECT v FROM cache_never WHERE id = 1 /* pgpilot:nocache */",
        // The same text with other literals: the session reuses its first reading, hint included.
        "SELECT v FROM cache_never WHERE id = 2 /* pgpilot:nocache */",
        "SELECT v FROM cache_never WHERE id = 3 -- pgpilot:nocache",
        "SELECT 1",
    ];
    let before = (hits(&proxy), counter(&proxy, "stores"));
    for sql in never {
        for _ in 0..3 {
            c.simple_query(sql).await.unwrap();
            c.query(sql, &[]).await.unwrap();
        }
    }
    assert_eq!((hits(&proxy), counter(&proxy, "stores")), before, "{}", cache_status(&proxy));
}

#[tokio::test]
async fn users_never_share_entries() {
    let d = common::direct("app").await;
    d.batch_execute(
        "DROP TABLE IF EXISTS cache_rls; CREATE TABLE cache_rls (owner text, secret text);
         INSERT INTO cache_rls VALUES ('app', 'for app'), ('trustuser', 'for trustuser');
         ALTER TABLE cache_rls ENABLE ROW LEVEL SECURITY;
         CREATE POLICY own ON cache_rls USING (owner = current_user);
         GRANT SELECT ON cache_rls TO app, trustuser;",
    )
    .await
    .unwrap();
    let proxy = Proxy::start(&pool_toml(4, TRUST_USERS));
    let app = proxy.connect("app").await;
    let other = proxy.connect_as("trustuser", "", "app").await.unwrap();
    let sql = "SELECT secret FROM cache_rls";
    for _ in 0..2 {
        assert_eq!(until_hit(&proxy, &app, sql).await, ["for app"]);
        assert_eq!(until_hit(&proxy, &other, sql).await, ["for trustuser"]);
        let stmt = other.prepare(sql).await.unwrap();
        let rows: Vec<String> = other.query(&stmt, &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
        assert_eq!(rows, ["for trustuser"]);
    }
}

#[tokio::test]
async fn rules_hints_ttl_and_size_limits() {
    make_table("cache_rules", 2000).await;
    make_table("cache_rules_off", 5).await;
    let toml =
        pool_toml(4, "[cache]\nmax_entry_bytes = 4096\n[[cache.rules]]\ntable = \"cache_rules_off\"\nttl_s = 0\n");
    let proxy = Proxy::start(&toml);
    let c = proxy.connect("app").await;
    until_hit(&proxy, &c, "SELECT v FROM cache_rules WHERE id = 1").await;
    let before = counter(&proxy, "stores");
    for _ in 0..3 {
        assert_eq!(text_rows(&c, "SELECT v FROM cache_rules_off WHERE id = 1").await, ["v1"]);
        assert_eq!(text_rows(&c, "SELECT * FROM cache_rules ORDER BY id").await.len(), 2000);
    }
    assert_eq!(counter(&proxy, "stores"), before, "a rule with ttl 0, and results over max_entry_bytes");
    assert!(counter(&proxy, "too_large") >= 1);
    // A hint's TTL: served while fresh, refilled after it expires.
    // A marker in a string literal is data, not a hint.
    let literal = "SELECT v FROM cache_rules WHERE v <> '/* pgpilot:nocache */' AND id = 3";
    assert_eq!(until_hit(&proxy, &c, literal).await, ["v3"]);
    let sql = "SELECT v FROM cache_rules WHERE id = 7 /* pgpilot:cache ttl=1 */";
    until_hit(&proxy, &c, sql).await;
    tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
    let before = hits(&proxy);
    assert_eq!(text_rows(&c, sql).await, ["v7"]);
    assert_eq!(hits(&proxy), before, "expired");
}

#[tokio::test]
async fn session_mode_caches_until_the_session_changes_settings() {
    make_table("cache_session", 5).await;
    let proxy = Proxy::start("[pool]\nmode = \"session\"\nmax_size = 4\ncheckout_timeout_ms = 5000\n");
    let c = proxy.connect("app").await;
    let sql = "SELECT v FROM cache_session WHERE id = 1";
    until_hit(&proxy, &c, sql).await;
    c.batch_execute("SET search_path = public").await.unwrap();
    let before = hits(&proxy);
    for _ in 0..3 {
        assert_eq!(text_rows(&c, sql).await, ["v1"]);
    }
    assert_eq!(hits(&proxy), before, "after SET this session no longer uses the cache");
}

/// `table` in public (rows v1, v2) and in `schema` (one row, 'tenant b'); a schema per test (two
/// concurrent CREATE SCHEMA IF NOT EXISTS of one name can fail).
async fn tenant_tables(schema: &str, table: &str) {
    make_table(table, 2).await;
    let d = common::direct("app").await;
    d.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {schema} AUTHORIZATION app;
         DROP TABLE IF EXISTS {schema}.{table}; CREATE TABLE {schema}.{table} (id int, v text);
         INSERT INTO {schema}.{table} VALUES (1, 'tenant b'); ALTER TABLE {schema}.{table} OWNER TO app;"
    ))
    .await
    .unwrap();
}

#[tokio::test]
async fn set_local_and_search_path_never_mix_entries() {
    tenant_tables("tenant_b", "cache_tenant").await;
    let proxy = Proxy::start(&pool_toml(4, ""));
    let c = proxy.connect("app").await;
    let read = "SELECT v FROM cache_tenant WHERE id = 1";
    assert_eq!(until_hit(&proxy, &c, read).await, ["v1"]);
    for _ in 0..2 {
        let rows = text_rows(&c, &format!("BEGIN; SET LOCAL search_path = tenant_b; {read}; COMMIT")).await;
        assert_eq!(rows, ["tenant b"]);
        c.batch_execute("BEGIN; SET LOCAL search_path = tenant_b").await.unwrap();
        assert_eq!(text_rows(&c, read).await, ["tenant b"], "not the public entry");
        c.batch_execute("COMMIT").await.unwrap();
        assert_eq!(text_rows(&c, read).await, ["v1"]);
    }
    c.batch_execute("SET search_path = tenant_b, public").await.unwrap();
    assert_eq!(until_hit(&proxy, &c, read).await, ["tenant b"], "a session setting is part of the key");
    let other = proxy.connect("app").await;
    assert_eq!(until_hit(&proxy, &other, read).await, ["v1"]);
}

/// The analysis is kept per shape: a SET LOCAL first sent with a comment and a line break (a
/// hostile client's spelling) must not teach the shape that SET LOCAL leaves reads alone.
#[tokio::test]
async fn set_local_first_seen_in_another_spelling_still_bypasses_the_cache() {
    tenant_tables("tenant_c", "cache_spelled").await;
    let proxy = Proxy::start(&pool_toml(4, ""));
    let c = proxy.connect("app").await;
    c.batch_execute("BEGIN; /* tenant */ SET\nLOCAL search_path = tenant_c; COMMIT").await.unwrap();
    let read = "SELECT v FROM cache_spelled WHERE id = 1";
    assert_eq!(until_hit(&proxy, &c, read).await, ["v1"]);
    for _ in 0..2 {
        c.batch_execute("BEGIN; SET LOCAL search_path = tenant_c").await.unwrap();
        assert_eq!(text_rows(&c, read).await, ["tenant b"], "not the public entry");
        c.batch_execute("COMMIT").await.unwrap();
    }
}

#[tokio::test]
async fn writes_reach_cascaded_partitioned_and_triggered_tables() {
    let d = common::direct("app").await;
    d.batch_execute(
        "DROP TABLE IF EXISTS cache_child, cache_parent, cache_part, cache_audit, cache_trig CASCADE;
         CREATE TABLE cache_parent (id int PRIMARY KEY);
         CREATE TABLE cache_child (id int PRIMARY KEY, parent int REFERENCES cache_parent ON DELETE CASCADE);
         INSERT INTO cache_parent VALUES (1), (2); INSERT INTO cache_child VALUES (10, 1), (20, 2);
         CREATE TABLE cache_part (id int, v text) PARTITION BY RANGE (id);
         CREATE TABLE cache_part_low PARTITION OF cache_part FOR VALUES FROM (0) TO (100);
         INSERT INTO cache_part VALUES (1, 'one');
         CREATE TABLE cache_trig (id int); CREATE TABLE cache_audit (n int); INSERT INTO cache_audit VALUES (0);
         CREATE OR REPLACE FUNCTION cache_bump() RETURNS trigger LANGUAGE plpgsql AS
           'BEGIN UPDATE cache_audit SET n = n + 1; RETURN NEW; END';
         CREATE TRIGGER cache_trig_bump AFTER INSERT ON cache_trig FOR EACH ROW EXECUTE FUNCTION cache_bump();
         ALTER TABLE cache_parent OWNER TO app; ALTER TABLE cache_child OWNER TO app;
         ALTER TABLE cache_part OWNER TO app; ALTER TABLE cache_part_low OWNER TO app;
         ALTER TABLE cache_trig OWNER TO app; ALTER TABLE cache_audit OWNER TO app;",
    )
    .await
    .unwrap();
    let proxy = Proxy::start(&pool_toml(4, ""));
    let c = proxy.connect("app").await;
    let children = "SELECT count(*) FROM cache_child";
    assert_eq!(until_hit(&proxy, &c, children).await, ["2"]);
    c.execute("DELETE FROM cache_parent WHERE id = 1", &[]).await.unwrap();
    assert_eq!(text_rows(&c, children).await, ["1"], "ON DELETE CASCADE reached the child");
    let parent = "SELECT v FROM cache_part WHERE id = 1";
    assert_eq!(until_hit(&proxy, &c, parent).await, ["one"]);
    c.execute("UPDATE cache_part_low SET v = 'uno' WHERE id = 1", &[]).await.unwrap();
    assert_eq!(text_rows(&c, parent).await, ["uno"], "a write to a partition reached its parent");
    let audit = "SELECT n FROM cache_audit";
    assert_eq!(until_hit(&proxy, &c, audit).await, ["0"]);
    c.execute("INSERT INTO cache_trig VALUES (1)", &[]).await.unwrap();
    assert_eq!(text_rows(&c, audit).await, ["1"], "a trigger's write");
}

#[tokio::test]
async fn a_reloaded_entry_limit_holds_for_fills_and_stores_alike() {
    make_table("cache_reload", 400).await;
    let proxy = Proxy::start(&pool_toml(4, "[cache]\nmax_entry_bytes = 2048\n"));
    let c = proxy.connect("app").await;
    until_hit(&proxy, &c, "SELECT v FROM cache_reload WHERE id = 1").await;
    let all = "SELECT * FROM cache_reload ORDER BY id";
    let before = counter(&proxy, "too_large");
    assert_eq!(text_rows(&c, all).await.len(), 400);
    assert!(counter(&proxy, "too_large") > before, "over 2048 bytes: {}", cache_status(&proxy));
    // Raised by a reload: the fill captures it and the store keeps it (they once read the limit
    // from two places, and a reload moved only one of them).
    proxy.rewrite_config(&pool_toml(4, "[cache]\nmax_entry_bytes = 1048576\n"));
    proxy.signal("HUP");
    assert_eq!(until_hit(&proxy, &c, all).await.len(), 400);
}

/// Parse, Bind, Execute, Sync of `name` (text results, no parameters): the rows' first column.
async fn run_named(r: &mut Raw, name: &str, sql: Option<&str>) -> Vec<(u8, Vec<u8>)> {
    let mut b = sql.map(|s| raw::parse(name, s)).unwrap_or_default();
    b.extend(raw::bind("", name));
    b.extend(raw::execute(""));
    b.extend(raw::sync());
    exchange(r, &b).await
}

fn data_rows(msgs: &[(u8, Vec<u8>)]) -> Vec<Vec<u8>> {
    msgs.iter().filter(|(t, _)| *t == b'D').map(|(_, b)| b.clone()).collect()
}

/// Parses `sql` under `name`, then runs it until the cache answers it (the first runs fill it);
/// every run's rows equal the first's. Returns those rows.
async fn run_named_until_hit(proxy: &Proxy, r: &mut Raw, name: &str, sql: &str) -> Vec<Vec<u8>> {
    let first = data_rows(&run_named(r, name, Some(sql)).await);
    for _ in 0..40 {
        let before = hits(proxy);
        assert_eq!(data_rows(&run_named(r, name, None).await), first);
        if hits(proxy) > before {
            return first;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("{sql} is never answered from the cache");
}

/// A statement name whose Parse the server rejected (here: inside an aborted transaction) is free
/// again; when the client parses another text under it, the cache must key its Binds by that
/// text. The cache once kept the rejected text's identity for the name (it took the second Parse
/// for a duplicate) and answered with the other statement's rows.
#[tokio::test]
async fn a_name_freed_by_a_rejected_parse_runs_its_new_text() {
    make_table("cache_reuse_a", 3).await;
    make_table("cache_reuse_b", 5).await;
    let a = "/* pgpilot:cache */ SELECT count(*) FROM cache_reuse_a";
    let b = "/* pgpilot:cache */ SELECT count(*) FROM cache_reuse_b";
    for mode in ["transaction", "session"] {
        let toml = format!("[pool]\nmode = \"{mode}\"\nmax_size = 4\ncheckout_timeout_ms = 5000\n{TRUST_USERS}");
        let proxy = Proxy::start(&toml);
        let mut r = Raw::login_trust(proxy.port, "trustuser", "app").await;
        let count_a = run_named_until_hit(&proxy, &mut r, "s1", a).await;
        let mut close = msg(b'C', b"Ss1\0");
        close.extend(raw::sync());
        exchange(&mut r, &close).await;
        let failed = exchange(&mut r, &raw::query("BEGIN; SELECT 1/0")).await;
        assert!(failed.iter().any(|(t, _)| *t == b'E'));
        let mut p = raw::parse("s1", a);
        p.extend(raw::sync());
        let rejected = exchange(&mut r, &p).await;
        assert_eq!(rejected.iter().find(|(t, _)| *t == b'E').map(|(_, e)| raw::sqlstate(e)).as_deref(), Some("25P02"));
        exchange(&mut r, &raw::query("ROLLBACK")).await;
        let direct_b = {
            let mut d = Raw::login_trust(pg_port(), "trustuser", "app").await;
            data_rows(&run_named(&mut d, "s1", Some(b)).await)
        };
        assert_ne!(direct_b, count_a);
        assert_eq!(data_rows(&run_named(&mut r, "s1", Some(b)).await), direct_b, "{mode}: first run of B");
        for round in 0..2 {
            assert_eq!(data_rows(&run_named(&mut r, "s1", None).await), direct_b, "{mode}: round {round} of B");
        }
    }
}

/// Session mode: `DEALLOCATE name` goes to the server and frees the name (psycopg closes its
/// statements this way); a new text parsed under it must not be keyed by the old one.
#[tokio::test]
async fn a_deallocated_name_runs_its_new_text_in_session_mode() {
    make_table("cache_dealloc_a", 2).await;
    make_table("cache_dealloc_b", 4).await;
    let a = "/* pgpilot:cache */ SELECT count(*) FROM cache_dealloc_a";
    let b = "/* pgpilot:cache */ SELECT count(*) FROM cache_dealloc_b";
    let toml = format!("[pool]\nmode = \"session\"\nmax_size = 4\ncheckout_timeout_ms = 5000\n{TRUST_USERS}");
    let proxy = Proxy::start(&toml);
    let mut r = Raw::login_trust(proxy.port, "trustuser", "app").await;
    let count_a = run_named_until_hit(&proxy, &mut r, "s1", a).await;
    let done = exchange(&mut r, &raw::query("DEALLOCATE s1")).await;
    assert!(!done.iter().any(|(t, _)| *t == b'E'), "DEALLOCATE succeeds");
    let count_b = data_rows(&run_named(&mut r, "s1", Some(b)).await);
    assert_ne!(count_b, count_a);
    for round in 0..2 {
        assert_eq!(data_rows(&run_named(&mut r, "s1", None).await), count_b, "round {round} of B");
    }
}
