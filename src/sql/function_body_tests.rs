//! Trigger bodies read as harmless or not (each refused one a way a body could leave state or run
//! code past the scan: a review's bypasses among them).

use super::harmless_words;

#[test]
fn a_timestamp_trigger_is_harmless_and_its_words_are_named() {
    for body in [
        "BEGIN NEW.updated_at := now(); RETURN NEW; END",
        "\nDECLARE d timestamptz;\nBEGIN\n  IF (TG_OP = 'UPDATE') THEN NEW.mtime = clock_timestamp(); END IF;\n  \
         NEW.v := coalesce(NEW.v, lower('X')); -- set_config('a', 'b', false)\n  RETURN NEW;\nEND",
        "BEGIN IF NEW.v IS DISTINCT FROM OLD.v THEN NEW.at := pg_catalog.now(); END IF; RETURN NEW; END",
        "BEGIN NEW.note := $q$ EXECUTE set_config() $q$; NEW.role := upper(NEW.role); RETURN NEW; END",
        "BEGIN RAISE NOTICE 'set %', NEW.id; NEW.n := length(NEW.s)::numeric; RETURN NEW; END",
        "BEGIN NEW.name := lower(NEW.name); NEW.date := (NEW.at).date; RETURN NEW; END",
    ] {
        assert!(harmless_words(body).is_some(), "{body}");
    }
    let words = harmless_words("BEGIN NEW.at := now(); NEW.total := (NEW).price; RETURN NEW; END").unwrap();
    for w in ["now", "at", "price", "new"] {
        assert!(words.iter().any(|x| x == w), "{w} in {words:?}: a function of that name is the caller's check");
    }
}

#[test]
fn anything_that_may_change_the_session_or_run_other_code_is_refused() {
    for body in [
        "BEGIN PERFORM set_config('app.tenant', 'x', false); RETURN NEW; END",
        "BEGIN PERFORM pg_catalog.set_config('a.b', 'x', false); RETURN NEW; END",
        "BEGIN PERFORM \"set_config\"('a.b', 'x', false); RETURN NEW; END",
        "BEGIN PERFORM set_config /* hidden */ ('a.b', 'x', false); RETURN NEW; END",
        "BEGIN PERFORM pg_advisory_lock(1); RETURN NEW; END",
        "BEGIN PERFORM my_helper(NEW.id); RETURN NEW; END",
        "BEGIN PERFORM U&\"\\0073et_config\"('a.b', 'x', false); RETURN NEW; END",
        "BEGIN SET search_path = evil; RETURN NEW; END",
        "BEGIN EXECUTE 'SELECT 1'; RETURN NEW; END",
        "BEGIN CREATE TEMP TABLE t (a int); RETURN NEW; END",
        "BEGIN INSERT INTO audit VALUES (NEW.id); RETURN NEW; END",
        "BEGIN NEW.total := (SELECT sum(x) FROM items); RETURN NEW; END",
        "BEGIN DO $d$ BEGIN PERFORM 1; END $d$; RETURN NEW; END",
        "BEGIN PERFORM query_to_xml('SELECT 1', true, true, ''); RETURN NEW; END",
        "BEGIN LISTEN chan; RETURN NEW; END",
        "BEGIN NEW.s := 'unterminated; END",
        // The review's bypasses of a first, deny-list version:
        "BEGIN PERFORM TREAT(4711::bigint AS pg_advisory_lock); RETURN NEW; END",
        "BEGIN NEW.s := 'A\\' || '; PERFORM pg_advisory_lock(7); -- '; RETURN NEW; END",
        "BEGIN REFRESH MATERIALIZED VIEW mv; RETURN NEW; END",
        "BEGIN ANALYZE u; RETURN NEW; END",
        "BEGIN DEALLOCATE ALL; RETURN NEW; END",
        "BEGIN PERFORM brin_summarize_range('u_b', 0); RETURN NEW; END",
        "BEGIN NEW.id := nextval('s'); RETURN NEW; END",
        "BEGIN PERFORM json(1), json_scalar(2); RETURN NEW; END",
        "BEGIN NOTIFY chan; RETURN NEW; END",
        // A second review's: built-ins called as fields, a name the server cuts to 63 bytes.
        "BEGIN PERFORM 1, (4711::bigint).pg_advisory_lock; RETURN NEW; END",
        "BEGIN PERFORM 1, ($q$SELECT 1$q$::varchar).ts_stat; RETURN NEW; END",
        "BEGIN NEW.x := (NEW.doc).query_to_xml; RETURN NEW; END",
        "BEGIN NEW.a := (NEW).aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaXYZ; RETURN NEW; END",
        "BEGIN NEW.a := (NEW).Ébauche; RETURN NEW; END",
        // A third review's: a built-in outside the allowed calls called as a field.
        "BEGIN NEW.n := ('u_b'::regclass).brin_summarize_new_values; RETURN NEW; END",
        "BEGIN PERFORM 1, (0.5).setseed; RETURN NEW; END",
    ] {
        assert!(harmless_words(body).is_none(), "{body}");
    }
}
