//! Authentication toward clients (SCRAM, md5, trust; the one-line upstream mode) and toward the
//! server (SCRAM, md5, cleartext, trust): success per method and a uniform 28P01 on failure.

mod common;

use common::raw::{startup_packet, Raw};
use common::Proxy;

const USERS: &str = r#"
[[users]]
name = "app"
password = "app"

[[users]]
name = "md5user"
password = "md5pass"
auth = "md5"

[[users]]
name = "plainuser"
password = "plainpass"

[[users]]
name = "trustuser"
auth = "trust"
"#;

async fn select_user(proxy: &Proxy, user: &str, pw: &str) -> Result<String, tokio_postgres::Error> {
    let c = proxy.connect_as(user, pw, "app").await?;
    let row = c.query_one("SELECT current_user::text", &[]).await?;
    Ok(row.get(0))
}

fn assert_auth_failed(r: Result<String, tokio_postgres::Error>) {
    let err = r.expect_err("login must fail");
    let db = err.as_db_error().unwrap_or_else(|| panic!("expected a server error, got {err}"));
    assert_eq!(db.code().code(), "28P01", "{}", db.message());
}

#[tokio::test]
async fn every_client_and_server_method_logs_in() {
    let proxy = Proxy::start(USERS);
    // client scram -> server scram
    assert_eq!(select_user(&proxy, "app", "app").await.unwrap(), "app");
    // client md5 -> server md5
    assert_eq!(select_user(&proxy, "md5user", "md5pass").await.unwrap(), "md5user");
    // client scram -> server cleartext
    assert_eq!(select_user(&proxy, "plainuser", "plainpass").await.unwrap(), "plainuser");
    // client trust -> server trust
    assert_eq!(select_user(&proxy, "trustuser", "").await.unwrap(), "trustuser");
}

#[tokio::test]
async fn wrong_passwords_and_unknown_users_get_28p01() {
    let proxy = Proxy::start(USERS);
    assert_auth_failed(select_user(&proxy, "app", "nope").await);
    assert_auth_failed(select_user(&proxy, "md5user", "nope").await);
    assert_auth_failed(select_user(&proxy, "ghost", "whatever").await);
}

#[tokio::test]
async fn upstream_url_credentials_are_the_login_in_one_line_mode() {
    let proxy = Proxy::start("");
    assert_eq!(select_user(&proxy, "app", "app").await.unwrap(), "app");
    assert_auth_failed(select_user(&proxy, "app", "bad").await);
    assert_auth_failed(select_user(&proxy, "postgres", "x").await);
    // any database on the server
    let c = proxy.connect("codebase").await;
    assert_eq!(c.query_one("SELECT current_database()::text", &[]).await.unwrap().get::<_, String>(0), "codebase");
}

#[tokio::test]
async fn scram_secret_from_pg_authid_is_accepted() {
    let admin = common::direct("postgres").await;
    let secret: String =
        admin.query_one("SELECT rolpassword FROM pg_authid WHERE rolname = 'app'", &[]).await.unwrap().get(0);
    assert!(secret.starts_with("SCRAM-SHA-256$"));
    let toml = format!("[[users]]\nname = \"app\"\npassword = \"{secret}\"\nserver_password = \"app\"\n");
    let proxy = Proxy::start(&toml);
    assert_eq!(select_user(&proxy, "app", "app").await.unwrap(), "app");
    assert_auth_failed(select_user(&proxy, "app", "wrong").await);
}

#[tokio::test]
async fn unknown_database_is_reported_with_3d000() {
    let proxy = Proxy::start(USERS);
    let mut r = Raw::connect(proxy.port).await;
    r.send(&startup_packet(&[("user", "trustuser"), ("database", "no_such_db")])).await;
    assert_eq!(r.error_codes_until_close().await, ["3D000"]);
}
