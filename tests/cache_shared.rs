//! The result cache across replicas and under concurrency: two pgpilot processes sharing Redis,
//! Redis dying mid-run, a writer racing readers with a staleness checker, single flight, and the
//! admin/HTTP surface.

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::cache::{cache_status, counter, hits, make_table, text_rows, until_hit};
use common::{free_port, pool_toml, Proxy};

fn with_redis(url: &str) -> String {
    pool_toml(6, &format!("[cache]\nredis_url = \"{url}\"\n"))
}

fn harness_redis() -> String {
    std::env::var("TEST_REDIS_URL").expect("TEST_REDIS_URL is not set: run the suite through tests/run.sh")
}

/// A private redis-server this test may kill.
struct OwnRedis(Child, u16);

impl OwnRedis {
    /// A probed free port can be taken before redis-server binds it (it then exits), by anything
    /// (once CI saw a "started" Redis that never answered), another test's redis-server
    /// included: only an answer naming this child's process id counts; a child that exited is
    /// tried again on a new port.
    fn start() -> OwnRedis {
        for _ in 0..3 {
            if let Some(redis) = Self::try_start() {
                return redis;
            }
        }
        panic!("redis-server did not start on three ports");
    }

    fn try_start() -> Option<OwnRedis> {
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server");
        let mut redis = OwnRedis(child, port);
        let deadline = Instant::now() + Duration::from_secs(10);
        while redis.answering_pid() != Some(redis.0.id()) {
            if let Some(status) = redis.0.try_wait().unwrap() {
                eprintln!("redis-server on port {port} exited during start: {status}");
                return None;
            }
            assert!(Instant::now() < deadline, "redis-server on port {port} did not answer within 10 s");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(redis)
    }

    /// The process id of the Redis answering on the port (INFO's `process_id`), if any answers.
    fn answering_pid(&self) -> Option<u32> {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.1)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        s.write_all(b"INFO server\r\n").ok()?;
        let (mut reply, mut buf) = (Vec::new(), [0u8; 4096]);
        loop {
            let text = String::from_utf8_lossy(&reply);
            if let Some(rest) = text.split("process_id:").nth(1).filter(|r| r.contains("\r\n")) {
                return rest.split("\r\n").next()?.trim().parse().ok();
            }
            let n = s.read(&mut buf).ok().filter(|&n| n > 0 && reply.len() < 64 * 1024)?;
            reply.extend_from_slice(&buf[..n]);
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.1)
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn wait_subscribed(proxy: &Proxy) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while cache_status(proxy)["redis_connected"] != true {
        assert!(Instant::now() < deadline, "no Redis subscription: {}", cache_status(proxy));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn replicas_share_results_and_see_each_others_commits() {
    make_table("cache_replicas", 5).await;
    let redis = OwnRedis::start();
    let (a, b) = (Proxy::start(&with_redis(&redis.url())), Proxy::start(&with_redis(&redis.url())));
    wait_subscribed(&a).await;
    wait_subscribed(&b).await;
    let (ca, cb) = (a.connect("app").await, b.connect("app").await);
    let read = "SELECT v FROM cache_replicas WHERE id = 1";
    until_hit(&a, &ca, read).await;
    until_hit(&b, &cb, read).await;
    assert!(counter(&b, "hits_redis") + counter(&a, "hits_redis") >= 1, "one replica used the other's result");
    for (i, (writer, reader, reader_proxy)) in [(&ca, &cb, &b), (&cb, &ca, &a)].into_iter().enumerate() {
        until_hit(reader_proxy, reader, read).await;
        writer.execute("UPDATE cache_replicas SET v = $1 WHERE id = 1", &[&format!("w{i}")]).await.unwrap();
        assert_eq!(text_rows(reader, read).await, [format!("w{i}")], "the other replica, right after the commit");
    }
}

#[tokio::test]
async fn redis_dying_mid_run_is_invisible_to_clients() {
    make_table("cache_outage", 5).await;
    let redis = OwnRedis::start();
    let proxy = Proxy::start(&with_redis(&redis.url()));
    wait_subscribed(&proxy).await;
    let c = proxy.connect("app").await;
    let read = "SELECT v FROM cache_outage WHERE id = 2";
    until_hit(&proxy, &c, read).await;
    drop(redis);
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut n = 0;
    while Instant::now() < deadline {
        assert_eq!(text_rows(&c, read).await, [if n == 0 { "v2".to_string() } else { format!("x{}", n - 1) }]);
        c.execute("UPDATE cache_outage SET v = $1 WHERE id = 2", &[&format!("x{n}")]).await.unwrap();
        n += 1;
    }
    assert!(n > 10);
    let s = cache_status(&proxy);
    assert_eq!(s["redis_connected"], false, "{s}");
    assert!(s["redis_errors"].as_u64().unwrap() >= 1, "{s}");
    // redis_verify_hits (the default): a hit Redis cannot vouch for is not served.
    let before = hits(&proxy);
    for _ in 0..5 {
        assert_eq!(text_rows(&c, read).await, [format!("x{}", n - 1)]);
    }
    assert_eq!(hits(&proxy), before, "no unverified hit while Redis is down");
}

#[tokio::test]
async fn without_verified_hits_an_outage_is_local_only() {
    make_table("cache_outage_local", 5).await;
    let redis = OwnRedis::start();
    let proxy =
        Proxy::start(&pool_toml(6, &format!("[cache]\nredis_url = \"{}\"\nredis_verify_hits = false\n", redis.url())));
    wait_subscribed(&proxy).await;
    let c = proxy.connect("app").await;
    let read = "SELECT v FROM cache_outage_local WHERE id = 2";
    until_hit(&proxy, &c, read).await;
    drop(redis);
    c.execute("UPDATE cache_outage_local SET v = 'after' WHERE id = 2", &[]).await.unwrap();
    assert_eq!(text_rows(&c, read).await, ["after"], "its own commits still invalidate");
    assert_eq!(until_hit(&proxy, &c, read).await, ["after"], "served from the local tier");
}

/// Redis paused (SIGSTOP: connections stay open, calls time out) while a commit goes through
/// replica A: B must not serve its older entry once Redis is back, at once (A bumps the shared
/// epoch as soon as Redis answers, not at its next call), and, with verified hits, not during the
/// outage either.
#[tokio::test]
async fn a_commit_during_a_redis_pause_reaches_the_other_replica_when_it_resumes() {
    make_table("cache_pause", 5).await;
    let redis = OwnRedis::start();
    let (a, b) = (Proxy::start(&with_redis(&redis.url())), Proxy::start(&with_redis(&redis.url())));
    wait_subscribed(&a).await;
    wait_subscribed(&b).await;
    let (ca, cb) = (a.connect("app").await, b.connect("app").await);
    let read = "SELECT v FROM cache_pause WHERE id = 3";
    assert_eq!(until_hit(&b, &cb, read).await, ["v3"]);
    let pid = redis.0.id().to_string();
    let signal = |sig: &str| assert!(Command::new("kill").args([sig, &pid]).status().unwrap().success());
    signal("-STOP");
    ca.execute("UPDATE cache_pause SET v = 'paused' WHERE id = 3", &[]).await.unwrap();
    assert_eq!(text_rows(&cb, read).await, ["paused"], "B during the pause (unverifiable: not served)");
    signal("-CONT");
    let resumed = Instant::now();
    // B's next reads, from the moment Redis answers again: never the value from before the commit.
    while resumed.elapsed() < Duration::from_secs(3) {
        assert_eq!(text_rows(&cb, read).await, ["paused"], "B {:?} after Redis resumed", resumed.elapsed());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(until_hit(&b, &cb, read).await, ["paused"], "B caches again");
}

/// A writer commits increasing values through one replica while readers on both replicas (some in
/// read-only transactions) check that no read returns less than what had committed before it began.
#[tokio::test]
async fn concurrent_writer_and_readers_never_see_stale_values() {
    let d = common::direct("app").await;
    d.batch_execute(
        "DROP TABLE IF EXISTS cache_stress; CREATE TABLE cache_stress (id int PRIMARY KEY, n bigint NOT NULL);
         INSERT INTO cache_stress VALUES (1, 0); ALTER TABLE cache_stress OWNER TO app;",
    )
    .await
    .unwrap();
    let url = harness_redis();
    // Redis healthy is the premise here: with the 50 ms default a starved machine can time a call
    // out, and a replica that cannot publish an invalidation leaves the other stale for up to the
    // 1 s back-off (the documented degradation). One run on a loaded machine reported 1100 stale
    // reads (not reproduced in 10 runs since, with or without load): the assertion now says how
    // many Redis calls failed, to tell that case from an ordering bug.
    let toml = pool_toml(6, &format!("[cache]\nredis_url = \"{url}\"\nredis_timeout_ms = 2000\n"));
    let proxies = Arc::new([Proxy::start(&toml), Proxy::start(&toml)]);
    wait_subscribed(&proxies[0]).await;
    wait_subscribed(&proxies[1]).await;
    let committed = Arc::new(AtomicI64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (p, committed, stop) = (proxies.clone(), committed.clone(), stop.clone());
        tokio::spawn(async move {
            let c = p[0].connect("app").await;
            let mut n = 0i64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                c.execute("UPDATE cache_stress SET n = $1 WHERE id = 1", &[&n]).await.unwrap();
                committed.store(n, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
            n
        })
    };
    let mut readers = Vec::new();
    for r in 0..4 {
        let (p, committed, stop) = (proxies.clone(), committed.clone(), stop.clone());
        readers.push(tokio::spawn(async move {
            let mut c = p[r % 2].connect("app").await;
            let (mut reads, mut stale) = (0, 0);
            while !stop.load(Ordering::Relaxed) {
                let floor = committed.load(Ordering::SeqCst);
                let sql = "SELECT n FROM cache_stress WHERE id = 1";
                let n: i64 = if r >= 2 {
                    let tx = c.transaction().await.unwrap();
                    let n = tx.query_one(sql, &[]).await.unwrap().get(0);
                    tx.commit().await.unwrap();
                    n
                } else {
                    c.query_one(sql, &[]).await.unwrap().get(0)
                };
                reads += 1;
                stale += (n < floor) as u32;
            }
            (reads, stale)
        }));
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop.store(true, Ordering::Relaxed);
    let writes = writer.await.unwrap();
    let mut total = 0;
    let errors = |p: &Proxy| counter(p, "redis_errors");
    for r in readers {
        let (reads, stale) = r.await.unwrap();
        assert_eq!(stale, 0, "stale reads (Redis errors: {} / {})", errors(&proxies[0]), errors(&proxies[1]));
        total += reads;
    }
    let cached = hits(&proxies[0]) + hits(&proxies[1]);
    assert!(writes > 100 && total > 400, "writes {writes} reads {total}");
    assert!(cached > 0, "the cache was exercised ({cached} hits of {total} reads)");
}

#[tokio::test]
async fn identical_misses_run_once() {
    make_table("cache_flight", 10).await;
    let proxy = Proxy::start(&pool_toml(12, ""));
    let c = proxy.connect("app").await;
    until_hit(&proxy, &c, "SELECT v FROM cache_flight WHERE id = 1").await;
    // ~0.3 s of work on the server, cacheable (a plain read of a table).
    let slow = "SELECT count(*) FROM cache_flight, generate_series(1, 2500000) g WHERE g % 7 = cache_flight.id";
    let first = {
        let c = proxy.connect("app").await;
        tokio::spawn(async move { text_rows(&c, slow).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut others = Vec::new();
    for _ in 0..8 {
        let c = proxy.connect("app").await;
        others.push(tokio::spawn(async move { text_rows(&c, slow).await }));
    }
    let want = first.await.unwrap();
    for o in others {
        assert_eq!(o.await.unwrap(), want);
    }
    let s = cache_status(&proxy);
    assert_eq!(s["coalesced"], 8, "{s}");
    let d = common::direct("app").await;
    let runs: i64 = d
        .query_one("SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%generate_series(1, 2500000)%' AND pid <> pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    // The connection that ran it shows it as its last query unless pgpilot's own background
    // work (the table list's refresh, a validation) has used it since, as happened once under a
    // loaded CI: at most one, and the eight others were answered by the single flight above.
    assert!(runs <= 1, "{runs} server connections ran it: only one may");
}

#[tokio::test]
async fn admin_console_and_http_show_and_flush_the_cache() {
    make_table("cache_admin", 5).await;
    let proxy = Proxy::start(&pool_toml(4, "[server]\nadmin_users = [\"app\"]"));
    let c = proxy.connect("app").await;
    let read = "SELECT v FROM cache_admin WHERE id = 3";
    until_hit(&proxy, &c, read).await;
    let admin = proxy.connect("pgpilot").await;
    let rows = text_rows(&admin, "SHOW CACHE").await;
    assert!(rows.iter().any(|r| r.starts_with("entries|") && r != "entries|0"), "{rows:?}");
    assert!(rows.iter().any(|r| r.starts_with("hits|")), "{rows:?}");
    admin.simple_query("FLUSH CACHE").await.unwrap();
    let before = hits(&proxy);
    assert_eq!(text_rows(&c, read).await, ["v3"]);
    assert_eq!(hits(&proxy), before, "flushed: a miss");
    until_hit(&proxy, &c, read).await;
    let (_, metrics) = proxy.http_get("/metrics");
    for name in [
        "pgpilot_cache_hits_total",
        "pgpilot_cache_misses_total",
        "pgpilot_cache_bytes",
        "pgpilot_cache_evictions_total",
        "pgpilot_cache_invalidations_total",
    ] {
        assert!(metrics.contains(name), "{name} missing");
    }
    let (_, queries) = proxy.http_get("/queries");
    let rows: serde_json::Value = serde_json::from_str(&queries).unwrap();
    let row = rows.as_array().unwrap().iter().find(|r| r["query"].as_str().unwrap().contains("cache_admin")).unwrap();
    assert!(row["cache_hits"].as_u64().unwrap() >= 1, "{row}");
    let s = cache_status(&proxy);
    assert!(s["bytes"].as_u64().unwrap() > 0 && s["flushes"] == 1, "{s}");
}
