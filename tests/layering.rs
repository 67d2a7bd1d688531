//! The layering rule of docs/ARCHITECTURE.md ("Layers"), checked over the source: a top-level
//! module of src/ may name (`crate::x`) only modules of lower layers, so the import graph stays
//! acyclic. The list is read from the document itself, so the rule and its check cannot drift.

use std::collections::HashMap;
use std::path::Path;

fn layers() -> HashMap<String, usize> {
    let doc = std::fs::read_to_string("docs/ARCHITECTURE.md").expect("docs/ARCHITECTURE.md");
    let start = doc.find("<!-- layers:begin -->").expect("layers:begin marker");
    let end = doc.find("<!-- layers:end -->").expect("layers:end marker");
    let mut out = HashMap::new();
    for line in doc[start..end].lines() {
        // "N. name name ...: why" (names are module names of src/, before the colon)
        let Some((rank, rest)) = line.trim().split_once(". ") else { continue };
        let Ok(rank) = rank.parse::<usize>() else { continue };
        let names = rest.split(':').next().unwrap_or("");
        for name in names.split_whitespace() {
            let name = name.trim_matches('`').trim_end_matches(',');
            assert!(out.insert(name.to_string(), rank).is_none(), "{name} listed twice");
        }
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The top-level module a file belongs to: its folder under src/, or its own name.
fn module_of(path: &Path) -> String {
    let rel = path.strip_prefix("src").unwrap();
    let first = rel.components().next().unwrap().as_os_str().to_string_lossy().to_string();
    first.trim_end_matches(".rs").to_string()
}

/// Every `crate::name` a file mentions, comments included (a doc link counts as a dependency).
fn named_modules(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("crate::") {
        let tail = &rest[at + 7..];
        let name: String = tail.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        let braced = tail.starts_with('{');
        if braced {
            let inner = &tail[1..tail.find('}').unwrap_or(tail.len())];
            for part in inner.split(',') {
                let n: String = part.trim().chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                out.push(n);
            }
        } else {
            out.push(name);
        }
        rest = &tail[1.min(tail.len())..];
    }
    out
}

#[test]
fn modules_import_only_lower_layers() {
    let layers = layers();
    let mut files = Vec::new();
    rust_files(Path::new("src"), &mut files);
    let mut wrong = Vec::new();
    for file in &files {
        let module = module_of(file);
        if module == "main" || module == "lib" {
            continue; // the roots: the binary, and the list of modules
        }
        let own = *layers.get(&module).unwrap_or_else(|| panic!("{module} ({}) is in no layer", file.display()));
        let text = std::fs::read_to_string(file).unwrap();
        for target in named_modules(&text) {
            if target == module || target.is_empty() {
                continue;
            }
            let Some(&theirs) = layers.get(&target) else { continue }; // an item of lib.rs, not a module
            if theirs >= own {
                wrong
                    .push(format!("{} ({module}, layer {own}) names crate::{target} (layer {theirs})", file.display()));
            }
        }
    }
    wrong.sort();
    wrong.dedup();
    assert!(wrong.is_empty(), "imports against the layers of docs/ARCHITECTURE.md:\n{}", wrong.join("\n"));
}

#[test]
fn the_checker_reads_braced_and_plain_paths() {
    let found = named_modules("use crate::net::frame;\nuse crate::{cache, pool::Pool};\n x = crate::sql::tokens::x;");
    assert_eq!(found, ["net", "cache", "pool", "sql"]);
}

/// The stages of the data path (src/frontend/stages/, one file each, `mod.rs` holding the
/// interface) see their session only through the interface: a stage never names the session's
/// internals or another stage, so none depends on another's state or on the order they run in.
#[test]
fn stages_name_neither_the_session_nor_each_other() {
    let dir = Path::new("src/frontend/stages");
    let stages: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "rs"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().to_string())
        .filter(|n| n != "mod")
        .collect();
    assert!(stages.len() >= 2, "stage files expected in {}", dir.display());
    let mut wrong = Vec::new();
    for stage in &stages {
        let text = std::fs::read_to_string(dir.join(format!("{stage}.rs"))).unwrap();
        let mut forbidden = vec!["frontend::session::".to_string(), "super::super::".to_string()];
        // A stage's own helper module (cache_writes for cache) is part of it.
        for other in stages.iter().filter(|o| *o != stage && !o.starts_with(&format!("{stage}_"))) {
            forbidden.push(format!("super::{other}"));
            forbidden.push(format!("stages::{other}"));
        }
        for f in &forbidden {
            if text.contains(f.as_str()) {
                wrong.push(format!("stages/{stage}.rs names {f}"));
            }
        }
    }
    assert!(wrong.is_empty(), "stages reaching past their interface:\n{}", wrong.join("\n"));
}

/// The session's modules `super::x` or `crate::frontend::x` in `text` names, braced imports
/// (`use super::{x, y::z}`) included.
fn frontend_modules(text: &str) -> Vec<String> {
    let ident = |s: &str| -> String { s.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect() };
    let mut out = Vec::new();
    for prefix in ["crate::frontend::", "super::"] {
        for (i, _) in text.match_indices(prefix) {
            let rest = &text[i + prefix.len()..];
            let names: Vec<String> = match rest.strip_prefix('{') {
                Some(list) => {
                    list[..list.find('}').unwrap_or(list.len())].split(',').map(|p| ident(p.trim())).collect()
                }
                None => vec![ident(rest)],
            };
            out.extend(names.into_iter().filter(|n| !n.is_empty() && n != "super"));
        }
    }
    out
}

/// The files a module loads with `#[path = "x.rs"]` (child modules in sibling files).
fn path_children(text: &str) -> Vec<String> {
    text.match_indices("#[path = \"")
        .filter_map(|(i, m)| Some(text[i + m.len()..].split('"').next()?.to_string()))
        .collect()
}

/// What the stages read of their session (the statement table, the reply queue, the transaction
/// tracker...) is made of modules that name no stage and not the session, nor do the modules
/// those name: otherwise a stage would depend, through them, on another stage or on the session
/// (the statement table once held the cache stage's statement type: a cycle).
#[test]
fn what_the_stages_read_of_the_session_names_no_stage() {
    let dir = Path::new("src/frontend");
    let mut files = Vec::new();
    rust_files(&dir.join("stages"), &mut files);
    let (mut todo, mut wrong): (Vec<String>, Vec<String>) = (Vec::new(), Vec::new());
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        // In stages/mod.rs `super::` is the session's folder; in a stage's file, the stages'.
        let of_session = |n: &String| file.ends_with("mod.rs") || text.contains(&format!("crate::frontend::{n}"));
        for named in frontend_modules(&text).into_iter().filter(of_session) {
            if named == "session" {
                wrong.push(format!("{} names the session", file.display()));
            } else if dir.join(format!("{named}.rs")).exists() {
                todo.push(named);
            }
        }
    }
    assert!(todo.iter().any(|m| m == "statements"), "the stages read the statement table: {todo:?}");
    let mut seen = std::collections::BTreeSet::new();
    while let Some(module) = todo.pop() {
        if !seen.insert(module.clone()) {
            continue;
        }
        let text = std::fs::read_to_string(dir.join(format!("{module}.rs"))).unwrap();
        // A child in a sibling file: its `super::` is this module, its `crate::frontend::` paths count.
        let children: Vec<String> =
            path_children(&text).iter().map(|f| std::fs::read_to_string(dir.join(f)).unwrap()).collect();
        let named =
            frontend_modules(&text).into_iter().chain(children.iter().flat_map(|c| {
                frontend_modules(c).into_iter().filter(|n| c.contains(&format!("crate::frontend::{n}")))
            }));
        for named in named {
            if named == "stages" || named == "session" {
                wrong.push(format!("frontend/{module}.rs (read by the stages) names {named}"));
            } else if dir.join(format!("{named}.rs")).exists() {
                todo.push(named);
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    let found = frontend_modules("use super::statements::Statements; x = crate::frontend::tx::TxTracker; super::super");
    assert_eq!(found, ["tx", "statements"]);
    assert_eq!(frontend_modules("use super::{stages::cache, tx};"), ["stages", "tx"]);
    assert_eq!(path_children("#[path = \"reply_retry.rs\"]\nmod retry;"), ["reply_retry.rs"]);
}

/// Timers are made through `crate::timers` (on the timer runtime), never on the data runtime's own
/// wheel: one timer there makes every park of that runtime read the clock and scan the wheel.
#[test]
fn timers_are_made_on_the_timer_runtime() {
    let mut files = Vec::new();
    rust_files(Path::new("src"), &mut files);
    // `time::sleep(` also catches `use tokio::time; time::sleep(..)`; crate::timers:: never matches.
    let forbidden = ["time::sleep", "time::timeout", "time::interval"];
    let mut wrong = Vec::new();
    for file in files.iter().filter(|f| !f.ends_with("timers.rs")) {
        let text = std::fs::read_to_string(file).unwrap();
        for f in forbidden.iter().filter(|f| text.contains(*f)) {
            wrong.push(format!("{} makes a timer with {f}", file.display()));
        }
        // `use tokio::time::{sleep, ..}` or `use tokio::{time::{..}}` naming a timer function.
        for line in text.lines().filter(|l| l.trim_start().starts_with("use tokio::") && l.contains("time")) {
            if ["sleep", "timeout", "interval"].iter().any(|f| line.contains(f)) {
                wrong.push(format!("{} imports tokio's timer functions: {}", file.display(), line.trim()));
            }
        }
    }
    assert!(!files.is_empty());
    assert!(wrong.is_empty(), "use crate::timers instead:\n{}", wrong.join("\n"));
}

/// Whether `text` names the type `App` (a whole word, not `AppName` or `app`).
fn names_app(text: &str) -> bool {
    let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
    text.match_indices("App").any(|(i, _)| !word(text[..i].chars().next_back()) && !word(text[i + 3..].chars().next()))
}

/// The admin console and the HTTP endpoints see the shared state only through
/// `shared::console::Console` (reads and named operations), never `App` whole: a SHOW or an
/// endpoint cannot write a field of the shared state or reach the secrets, TLS or the shutdown
/// sender.
#[test]
fn admin_and_http_see_the_shared_state_through_the_console() {
    let mut files = Vec::new();
    rust_files(Path::new("src/admin"), &mut files);
    rust_files(Path::new("src/http"), &mut files);
    assert!(files.len() >= 4, "admin and http sources expected");
    let wrong: Vec<String> = files
        .iter()
        .filter(|f| names_app(&std::fs::read_to_string(f).unwrap()))
        .map(|f| f.display().to_string())
        .collect();
    assert!(
        wrong.is_empty(),
        "these name shared::App (comments count too); use shared::console::Console:\n{}",
        wrong.join("\n")
    );
    assert!(names_app("use crate::shared::App;") && names_app("fn f(a: Arc<App>)"));
    assert!(names_app("use crate::shared::{App, ClientSnapshot};"));
    assert!(!names_app("let app = AppName::new(); // apps") && !names_app("MyApp"));
}
