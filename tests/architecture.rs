//! Architecture rules for `src/`, checked by reading the source text:
//!
//! - a module imports only from its own layer or the layers below it (the table in [`rule`],
//!   explained in `docs/architecture.md`);
//! - there are no import cycles between files;
//! - the functional core, `src/core/`, does no I/O: it does not even name the crates and types that do.
//!
//! Reading text instead of compiling keeps the test free of dependencies and fast. The reader is
//! small on purpose: it blanks comments and literals, expands `use` trees and finds inline
//! `crate::`, `super::` and `self::` paths. Its own tests below keep it from passing by finding
//! nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

// The rules ----------------------------------------------------------------------------------------

/// What a top-level module may import from the crate besides itself.
enum Rule {
    Only(&'static [&'static str]),
    Anything,
}

/// The layers, lowest first. `None`: the module has no place yet, which is itself a failure, so a new
/// module cannot slip past the rule by not being listed.
fn rule(module: &str) -> Option<Rule> {
    const CORE_AND_BELOW: &[&str] = &["prefix", "config", "core"];
    Some(match module {
        // Prefix arithmetic, the logging set-up, the demo's loopback lab and crash-safe writes to
        // the state directory stand alone.
        "prefix" | "logging" | "demo" | "state_file" => Rule::Only(&[]),
        // The history's file: the core's events, written with the state directory's safe writes.
        "history_log" => Rule::Only(&["core", "state_file"]),
        "config" => Rule::Only(&["prefix"]),
        // The functional core: typed values in, typed values out.
        "core" => Rule::Only(&["prefix", "config"]),
        // The two sources of data never know each other (the scheduler joins them), and the views
        // render what the core computed.
        "probe" | "metrics" | "output" | "change_request" => Rule::Only(CORE_AND_BELOW),
        // The status page renders the snapshot, filtered as `output` filters it.
        "page" => Rule::Only(&["prefix", "config", "core", "output"]),
        "discovery" => Rule::Only(&["prefix", "config", "core", "state_file"]),
        "http" => Rule::Only(&[
            "prefix",
            "config",
            "core",
            "metrics",
            "output",
            "page",
            "change_request",
        ]),
        "app" => Rule::Only(&[
            "prefix",
            "config",
            "core",
            "probe",
            "discovery",
            "state_file",
            "history_log",
        ]),
        "cli" => Rule::Anything,
        _ => return None,
    })
}

fn describe(module: &str, allowed: &[&str]) -> String {
    if allowed.is_empty() {
        format!("{module} imports nothing from the crate")
    } else {
        format!("{module} may import only {} and itself", allowed.join(", "))
    }
}

/// What `src/core/` may not mention: the I/O crates, and the standard library's I/O.
const CORE_FORBIDDEN: &[&str] = &[
    "tokio",
    "reqwest",
    "hickory",
    "axum",
    "std::fs",
    "std::net::TcpStream",
    "TcpStream",
    "UdpSocket",
    "std::process",
];

// The tests ----------------------------------------------------------------------------------------

#[test]
fn layers_are_respected() {
    let files = read_tree();
    let mut violations = Vec::new();
    for file in &files {
        let Some(top) = file.module.as_ref().and_then(|m| m.first()) else {
            continue;
        };
        if rule(top).is_none() {
            violations.push(format!(
                "{}: module `{top}` has no layer: give it one in tests/architecture.rs and docs/architecture.md",
                file.name
            ));
        }
    }
    for import in imports(&files) {
        // `lib.rs` declares the modules and is unrestricted.
        let Some(top) = import.from.first() else { continue };
        // Unrestricted, or without a layer (reported above).
        let Some(Rule::Only(allowed)) = rule(top) else { continue };
        // A path into the crate root (an item of `lib.rs`) counts as no module: it would hide the
        // layer the item really lives in.
        let permitted = import
            .to
            .first()
            .is_some_and(|to| to == top || allowed.contains(&to.as_str()));
        if !permitted {
            violations.push(format!(
                "{}:{}: imports crate::{} (layer rule: {})",
                import.file,
                import.line,
                import.path.join("::"),
                describe(top, allowed)
            ));
        }
    }
    assert!(
        violations.is_empty(),
        "{} import(s) break the layers described in docs/architecture.md:\n{}",
        violations.len(),
        violations.join("\n")
    );
}

#[test]
fn no_import_cycles() {
    let graph = dependency_graph(&imports(&read_tree()));
    let cycles = find_cycles(&graph);
    let report: Vec<String> = cycles
        .iter()
        .map(|cycle| {
            let mut lines = vec![format!("{} -> {}", cycle.join(" -> "), cycle[0])];
            for (from, to) in cycle.iter().zip(cycle.iter().cycle().skip(1)) {
                lines.push(format!("    {from} -> {to}: {}", graph[from][to]));
            }
            lines.join("\n")
        })
        .collect();
    assert!(
        cycles.is_empty(),
        "{} import cycle(s) between files:\n{}",
        cycles.len(),
        report.join("\n")
    );
}

#[test]
fn core_does_no_io() {
    let mut violations = Vec::new();
    let mut core_files = 0;
    for file in read_tree() {
        if file
            .module
            .as_ref()
            .and_then(|m| m.first())
            .is_none_or(|top| top != "core")
        {
            continue;
        }
        core_files += 1;
        for (line, mentions) in io_mentions(&file.text) {
            violations.push(format!("{}:{line}: mentions {}", file.name, mentions.join(", ")));
        }
    }
    assert!(core_files > 0, "no file under src/core/: was the core moved?");
    assert!(
        violations.is_empty(),
        "the functional core must do no I/O; move this to the shell (probe/, discovery/, app/):\n{}",
        violations.join("\n")
    );
}

/// The rules above would pass on a reader that finds nothing; this pins what it finds.
#[test]
fn reader_finds_grouped_inline_and_relative_paths_but_not_comments() {
    const SNIPPET: &str = r#"//! Mentions crate::probe in a doc comment, which is not an import.
use std::fmt;
use crate::{
    config::{self, Target},
    prefix::PrefixIndex as Index,
};
pub use crate::core::finding::Finding;
// use crate::probe::tcp;
/* use crate::probe::ssh; */
use super::outcome::*;

fn render(c: char) -> String {
    let _ = ('{', "crate::http::router is only text");
    crate::output::render(&super::audit::diff())
}

#[cfg(test)]
mod tests {
    use super::*;
}
"#;
    let module = names(&["core", "state"]);
    let found = references(&module, SNIPPET);
    let paths: BTreeSet<String> = found.iter().map(|r| r.path.join("::")).collect();
    let expected = [
        "config",
        "config::Target",
        "prefix::PrefixIndex",
        "core::finding::Finding",
        "core::outcome",
        "output::render",
        "core::audit::diff",
        "core::state",
    ];
    assert_eq!(paths, expected.iter().map(ToString::to_string).collect());

    let render_line = SNIPPET
        .lines()
        .position(|l| l.contains("crate::output::render"))
        .unwrap()
        + 1;
    let render = found.iter().find(|r| r.path.join("::") == "output::render").unwrap();
    assert_eq!(render.line, render_line);

    // Each path belongs to the longest module that is a file; `core::audit` is not one here.
    let modules: BTreeSet<Vec<String>> = [names(&[]), names(&["core"]), names(&["core", "finding"])].into();
    assert_eq!(
        owning_module(&modules, &names(&["core", "finding", "Finding"])),
        names(&["core", "finding"])
    );
    assert_eq!(
        owning_module(&modules, &names(&["core", "audit", "diff"])),
        names(&["core"])
    );
    assert_eq!(owning_module(&modules, &names(&["VERSION"])), names(&[]));
}

#[test]
fn io_scan_sees_grouped_std_imports_but_not_comments() {
    let source =
        "use std::{fs, collections::HashMap};\n// tokio is fine in a comment\nfn f(s: tokio::net::TcpStream) {}\n";
    let found = io_mentions(source);
    assert_eq!(
        found,
        vec![
            (1, vec!["std::fs".to_string()]),
            (3, vec!["tokio".to_string(), "TcpStream".to_string()])
        ]
    );
}

#[test]
fn cycles_are_found_and_parents_using_children_are_not_edges() {
    let import = |from: &[&str], to: &[&str]| Import {
        file: String::from("src/x.rs"),
        line: 1,
        from: names(from),
        path: names(to),
        to: names(to),
    };
    let graph = dependency_graph(&[
        import(&["core"], &["core", "audit"]),
        import(&["core", "audit"], &["core"]),
        import(&["probe"], &["discovery"]),
        import(&["discovery", "dns"], &["probe"]),
        import(&["discovery"], &["discovery", "dns"]),
        import(&["app"], &["probe"]),
    ]);
    assert!(!graph.get("core").is_some_and(|to| to.contains_key("core::audit")));
    assert!(graph["core::audit"].contains_key("core"));
    // `discovery` naming its child `discovery::dns` is not an edge, so `probe -> discovery` and
    // `discovery::dns -> probe` close no cycle...
    assert_eq!(find_cycles(&graph), Vec::<Vec<String>>::new());
    // ...but `probe` importing the child that imports it does.
    let mut graph = graph;
    graph
        .entry("probe".into())
        .or_default()
        .insert("discovery::dns".into(), "here".into());
    assert_eq!(find_cycles(&graph), vec![names(&["discovery::dns", "probe"])]);
}

#[test]
fn scan_sees_the_real_tree() {
    let files = read_tree();
    assert!(files.len() >= 10, "only {} .rs files found under src/", files.len());
    let count = imports(&files).len();
    assert!(count >= 20, "only {count} references into the crate found under src/");
}

// Reading the tree ---------------------------------------------------------------------------------

struct SourceFile {
    /// Relative to the crate, like `src/core/audit.rs`.
    name: String,
    /// The module the file is, from the crate root. `None` for a binary's root (`main.rs`,
    /// `src/bin/`): a crate of its own, unrestricted, whose `crate::` means something else.
    module: Option<Vec<String>>,
    text: String,
}

fn read_tree() -> Vec<SourceFile> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut paths = Vec::new();
    collect_rs(&root.join("src"), &mut paths);
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let relative = path.strip_prefix(root).expect("found under the crate");
            SourceFile {
                name: relative.to_string_lossy().replace('\\', "/"),
                module: module_of(relative),
                text: fs::read_to_string(&path).unwrap_or_else(|err| panic!("cannot read {}: {err}", path.display())),
            }
        })
        .collect()
}

fn collect_rs(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = fs::read_dir(dir).unwrap_or_else(|err| panic!("cannot list {}: {err}", dir.display()));
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            collect_rs(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `src/core/audit.rs` is `core::audit`, `src/core/mod.rs` is `core`, `src/lib.rs` is the root.
fn module_of(relative: &Path) -> Option<Vec<String>> {
    let parts: Vec<String> = relative
        .iter()
        .skip(1) // `src`
        .map(|part| part.to_string_lossy().into_owned())
        .collect();
    let (file, dirs) = parts.split_last()?;
    let stem = Path::new(file).file_stem()?.to_string_lossy().into_owned();
    if dirs.first().is_some_and(|d| d == "bin") || (dirs.is_empty() && stem == "main") {
        return None;
    }
    let mut module = dirs.to_vec();
    if stem != "mod" && !(dirs.is_empty() && stem == "lib") {
        module.push(stem);
    }
    Some(module)
}

/// One file's reference into the crate.
struct Import {
    file: String,
    line: usize,
    /// The module of the file.
    from: Vec<String>,
    /// The path named, from the crate root.
    path: Vec<String>,
    /// The module (a file) that path lands in.
    to: Vec<String>,
}

fn imports(files: &[SourceFile]) -> Vec<Import> {
    let modules: BTreeSet<Vec<String>> = files.iter().filter_map(|f| f.module.clone()).collect();
    let mut out = Vec::new();
    for file in files {
        let Some(module) = &file.module else { continue };
        for reference in references(module, &file.text) {
            out.push(Import {
                file: file.name.clone(),
                line: reference.line,
                from: module.clone(),
                to: owning_module(&modules, &reference.path),
                path: reference.path,
            });
        }
    }
    out
}

/// The longest prefix of `path` that is a file's module; the root if none is.
fn owning_module(modules: &BTreeSet<Vec<String>>, path: &[String]) -> Vec<String> {
    (0..=path.len())
        .rev()
        .map(|n| &path[..n])
        .find(|prefix| modules.contains(*prefix))
        .map_or_else(Vec::new, <[String]>::to_vec)
}

/// Module name -> module it imports -> where (the first place seen).
type Graph = BTreeMap<String, BTreeMap<String, String>>;

fn dependency_graph(imports: &[Import]) -> Graph {
    let mut graph = Graph::new();
    for import in imports {
        // A module naming itself or its own children (declaring, re-exporting, using them) is how
        // Rust modules are built, not a dependency. A child naming its parent is one.
        if import.to.starts_with(&import.from) {
            continue;
        }
        graph
            .entry(show(&import.from))
            .or_default()
            .entry(show(&import.to))
            .or_insert_with(|| {
                format!(
                    "{}:{} imports crate::{}",
                    import.file,
                    import.line,
                    import.path.join("::")
                )
            });
    }
    graph
}

fn show(module: &[String]) -> String {
    if module.is_empty() {
        "crate".to_string()
    } else {
        module.join("::")
    }
}

/// Every cycle met by a depth-first search, each rotated to start at its smallest module.
fn find_cycles(graph: &Graph) -> Vec<Vec<String>> {
    let mut search = CycleSearch {
        graph,
        done: BTreeSet::new(),
        path: Vec::new(),
        cycles: BTreeSet::new(),
    };
    for node in graph.keys() {
        search.visit(node);
    }
    search.cycles.into_iter().collect()
}

struct CycleSearch<'g> {
    graph: &'g Graph,
    done: BTreeSet<&'g str>,
    /// The modules from the search's start to here; meeting one of them again closes a cycle.
    path: Vec<&'g str>,
    cycles: BTreeSet<Vec<String>>,
}

impl<'g> CycleSearch<'g> {
    fn visit(&mut self, node: &'g str) {
        if self.done.contains(node) {
            return;
        }
        if let Some(at) = self.path.iter().position(|n| *n == node) {
            let mut cycle: Vec<String> = self.path[at..].iter().map(ToString::to_string).collect();
            let smallest = (0..cycle.len()).min_by_key(|&i| &cycle[i]).unwrap_or(0);
            cycle.rotate_left(smallest);
            self.cycles.insert(cycle);
            return;
        }
        self.path.push(node);
        if let Some(next) = self.graph.get(node) {
            for to in next.keys() {
                self.visit(to);
            }
        }
        self.path.pop();
        self.done.insert(node);
    }
}

/// Line -> the forbidden names on it, for the core's I/O rule.
fn io_mentions(source: &str) -> Vec<(usize, Vec<String>)> {
    let mut found: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    // Comments are blanked; string literals stay, the rule is about the text.
    let text = blank(source, Literals::Keep);
    for (index, line) in text.split(|&c| c == '\n').enumerate() {
        let line: String = line.iter().collect();
        for token in CORE_FORBIDDEN {
            if mentions(&line, token) {
                found.entry(index + 1).or_default().push((*token).to_string());
            }
        }
    }
    // `use std::{fs, ..}` names `std::fs` without writing it.
    let code = blank(source, Literals::Blank);
    for statement in use_statements(&code) {
        for path in &statement.paths {
            let path = path.join("::");
            let line = line_at(&code, statement.start);
            for token in CORE_FORBIDDEN.iter().filter(|t| t.contains("::")) {
                let named = path == *token || path.starts_with(&format!("{token}::"));
                let listed = found.get(&line).is_some_and(|l| l.iter().any(|t| t == token));
                if named && !listed {
                    found.entry(line).or_default().push((*token).to_string());
                }
            }
        }
    }
    found.into_iter().collect()
}

/// Whether `token` starts a word somewhere in `line` (so `hickory_resolver` names `hickory`).
fn mentions(line: &str, token: &str) -> bool {
    line.match_indices(token)
        .any(|(at, _)| !line[..at].chars().next_back().is_some_and(is_ident))
}

// The reader ---------------------------------------------------------------------------------------

/// A path into the crate named in a file, resolved from the crate root.
#[derive(Debug)]
struct Reference {
    line: usize,
    path: Vec<String>,
}

/// Every `crate::`, `super::` and `self::` path of a file whose module is `module`: in `use` trees
/// (expanded) and inline in code. Comments and literals are skipped.
fn references(module: &[String], source: &str) -> Vec<Reference> {
    let mut code = blank(source, Literals::Blank);
    let inline = inline_modules(&code);
    // `super` inside `mod tests { .. }` is the file's own module, not its parent.
    let scope = |at: usize| -> Vec<String> {
        let mut scope = module.to_vec();
        scope.extend(
            inline
                .iter()
                .filter(|m| m.open < at && at < m.close)
                .map(|m| m.name.clone()),
        );
        scope
    };
    let mut found = Vec::new();
    for statement in use_statements(&code) {
        for path in &statement.paths {
            if let Some(path) = resolve(&scope(statement.start), path) {
                found.push(Reference {
                    line: line_at(&code, statement.start),
                    path,
                });
            }
        }
        // Read once: what is left for the inline scan is code.
        for c in &mut code[statement.start..statement.end] {
            if *c != '\n' {
                *c = ' ';
            }
        }
    }
    let mut at = 0;
    while at < code.len() {
        if !starts_path(&code, at) {
            at += 1;
            continue;
        }
        let (segments, end) = read_path(&code, at);
        if let Some(path) = resolve(&scope(at), &segments) {
            found.push(Reference {
                line: line_at(&code, at),
                path,
            });
        }
        at = end;
    }
    found
}

/// Turns `crate::a`, `self::a` and `super::super::a` into a path from the crate root; `None` for
/// paths that start elsewhere (`std::..`, a child module named bare).
fn resolve(scope: &[String], segments: &[String]) -> Option<Vec<String>> {
    let (first, mut rest) = segments.split_first()?;
    let mut base = match first.as_str() {
        "crate" => Vec::new(),
        "self" => scope.to_vec(),
        "super" => {
            let mut parent = scope.to_vec();
            parent.pop()?;
            parent
        }
        _ => return None,
    };
    while let Some((segment, tail)) = rest.split_first() {
        if segment != "super" {
            break;
        }
        base.pop()?;
        rest = tail;
    }
    base.extend_from_slice(rest);
    Some(base)
}

/// Whether a `crate`, `super` or `self` path starts at `at`: a whole word followed by `::`, not
/// itself after `::` (the second `super` of `super::super`), and not `pub(in crate::..)`.
fn starts_path(code: &[char], at: usize) -> bool {
    let Some(word) = ["crate", "super", "self"].into_iter().find(|w| is_word_at(code, at, w)) else {
        return false;
    };
    let after = skip_space(code, at + word.len());
    if !code[after..].starts_with(&[':', ':']) {
        return false;
    }
    let before = previous_tokens(code, at, 3);
    before.first().is_none_or(|t| t != ":")
        && !(before.len() == 3 && before[0] == "in" && before[1] == "(" && before[2] == "pub")
}

/// Up to `count` tokens (words or single punctuation) before `at`, nearest first.
fn previous_tokens(code: &[char], at: usize, count: usize) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut end = at;
    while tokens.len() < count {
        while end > 0 && code[end - 1].is_whitespace() {
            end -= 1;
        }
        if end == 0 {
            break;
        }
        let mut start = end - 1;
        if is_ident(code[start]) {
            while start > 0 && is_ident(code[start - 1]) {
                start -= 1;
            }
        }
        tokens.push(code[start..end].iter().collect());
        end = start;
    }
    tokens
}

/// Reads `word(::word)*` from `at`; returns the words and where they end.
fn read_path(code: &[char], at: usize) -> (Vec<String>, usize) {
    let (first, mut end) = read_word(code, at);
    let mut segments = vec![first];
    loop {
        let colons = skip_space(code, end);
        if !code[colons..].starts_with(&[':', ':']) {
            break;
        }
        let next = skip_space(code, colons + 2);
        if !code.get(next).copied().is_some_and(is_ident) {
            break;
        }
        let (word, word_end) = read_word(code, next);
        segments.push(word);
        end = word_end;
    }
    (segments, end)
}

fn read_word(code: &[char], at: usize) -> (String, usize) {
    let end = (at..code.len()).find(|&i| !is_ident(code[i])).unwrap_or(code.len());
    (code[at..end].iter().collect(), end)
}

/// A `use` item: where it starts and ends in the text, and the paths its tree names.
struct UseStatement {
    start: usize,
    end: usize,
    paths: Vec<Vec<String>>,
}

/// Every `use` item, with its tree expanded: `use a::{b, c::{self, d}};` names `a::b`, `a::c` and
/// `a::c::d`.
fn use_statements(code: &[char]) -> Vec<UseStatement> {
    let mut statements = Vec::new();
    let mut at = 0;
    while at < code.len() {
        if !is_word_at(code, at, "use") {
            at += 1;
            continue;
        }
        let body = at + "use".len();
        let mut depth = 0_usize;
        let semicolon = (body..code.len())
            .find(|&i| {
                match code[i] {
                    '{' => depth += 1,
                    '}' => depth = depth.saturating_sub(1),
                    _ => {}
                }
                code[i] == ';' && depth == 0
            })
            .unwrap_or(code.len());
        let tokens = tokenize(&code[body..semicolon]);
        let mut paths = Vec::new();
        use_tree(&tokens, &mut 0, &[], &mut paths);
        let end = (semicolon + 1).min(code.len());
        statements.push(UseStatement { start: at, end, paths });
        at = end;
    }
    statements
}

/// Parses one use tree from `tokens[*pos..]`, appending every path it names to `out`.
fn use_tree(tokens: &[String], pos: &mut usize, prefix: &[String], out: &mut Vec<Vec<String>>) {
    let mut path = prefix.to_vec();
    while let Some(token) = tokens.get(*pos) {
        match token.as_str() {
            "::" => *pos += 1,
            "{" => {
                *pos += 1;
                while tokens.get(*pos).is_some_and(|t| t != "}") {
                    use_tree(tokens, pos, &path, out);
                    if tokens.get(*pos).is_some_and(|t| t == ",") {
                        *pos += 1;
                    }
                }
                *pos += 1;
                return;
            }
            "*" => {
                *pos += 1;
                break;
            }
            // `as name`: the alias names nothing in the crate.
            "as" => *pos += 2,
            "," | "}" => break,
            word => {
                // `{self, ..}` names the group's prefix itself.
                if !(word == "self" && path.len() == prefix.len() && !prefix.is_empty()) {
                    path.push(word.to_string());
                }
                *pos += 1;
            }
        }
    }
    out.push(path);
}

/// Words (with a leading `$`, for `$crate`), `::`, and single punctuation.
fn tokenize(code: &[char]) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut at = 0;
    while at < code.len() {
        let c = code[at];
        if c.is_whitespace() {
            at += 1;
        } else if code[at..].starts_with(&[':', ':']) {
            tokens.push("::".to_string());
            at += 2;
        } else if is_ident(c) || c == '$' {
            // `$crate` (in macros) is `crate`.
            let (word, end) = read_word(code, at + 1);
            tokens.push(if c == '$' { word } else { format!("{c}{word}") });
            at = end;
        } else {
            tokens.push(c.to_string());
            at += 1;
        }
    }
    tokens
}

/// A `mod name { .. }` written inline in a file.
struct InlineModule {
    name: String,
    open: usize,
    close: usize,
}

fn inline_modules(code: &[char]) -> Vec<InlineModule> {
    let mut modules = Vec::new();
    for at in 0..code.len() {
        if !is_word_at(code, at, "mod") {
            continue;
        }
        let name_at = skip_space(code, at + "mod".len());
        let (name, name_end) = read_word(code, name_at);
        let open = skip_space(code, name_end);
        if name.is_empty() || code.get(open) != Some(&'{') {
            continue; // `mod name;`: a file of its own
        }
        let mut depth = 0_usize;
        let close = (open..code.len())
            .find(|&i| {
                match code[i] {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    _ => {}
                }
                depth == 0
            })
            .unwrap_or(code.len());
        modules.push(InlineModule { name, open, close });
    }
    modules
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Literals {
    Keep,
    Blank,
}

/// The source as characters with every comment (and, for [`Literals::Blank`], every string and
/// char literal) replaced by spaces. Newlines stay, so positions keep their line.
fn blank(source: &str, literals: Literals) -> Vec<char> {
    let chars: Vec<char> = source.chars().collect();
    let mut out = chars.clone();
    let mut at = 0;
    while at < chars.len() {
        let Some((end, is_literal)) = comment_or_literal(&chars, at) else {
            at += 1;
            continue;
        };
        if !is_literal || literals == Literals::Blank {
            for c in &mut out[at..end] {
                if *c != '\n' {
                    *c = ' ';
                }
            }
        }
        at = end;
    }
    out
}

/// If a comment or literal starts at `at`: where it ends, and whether it is a literal.
fn comment_or_literal(chars: &[char], at: usize) -> Option<(usize, bool)> {
    if let Some(end) = raw_string_end(chars, at) {
        return Some((end, true));
    }
    match (chars[at], chars.get(at + 1).copied()) {
        ('/', Some('/')) => Some((
            (at..chars.len()).find(|&i| chars[i] == '\n').unwrap_or(chars.len()),
            false,
        )),
        ('/', Some('*')) => Some((block_comment_end(chars, at), false)),
        ('"', _) => {
            let mut i = at + 1;
            while i < chars.len() && chars[i] != '"' {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            Some(((i + 1).min(chars.len()), true))
        }
        // `'\n'`, `'\''`, `'\u{41}'`
        ('\'', Some('\\')) => {
            let close = (at + 3..chars.len()).find(|&i| chars[i] == '\'').unwrap_or(chars.len());
            Some(((close + 1).min(chars.len()), true))
        }
        // `'x'`; anything else after a quote is a lifetime or a label.
        ('\'', Some(_)) if chars.get(at + 2) == Some(&'\'') => Some((at + 3, true)),
        _ => None,
    }
}

/// Block comments nest in Rust.
fn block_comment_end(chars: &[char], at: usize) -> usize {
    let mut depth = 0_usize;
    let mut i = at;
    while i < chars.len() {
        if chars[i..].starts_with(&['/', '*']) {
            depth += 1;
            i += 2;
        } else if chars[i..].starts_with(&['*', '/']) {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return i;
            }
        } else {
            i += 1;
        }
    }
    chars.len()
}

/// `r"..."`, `r#"..."#`, `br"..."`: where it ends, if one starts at `at` (not `r#ident`).
fn raw_string_end(chars: &[char], at: usize) -> Option<usize> {
    let starts_word = |i: usize| i == 0 || !is_ident(chars[i - 1]);
    let prefixed = at > 0 && matches!(chars[at - 1], 'b' | 'c') && starts_word(at - 1);
    if chars[at] != 'r' || !(starts_word(at) || prefixed) {
        return None;
    }
    let hashes = chars[at + 1..].iter().take_while(|&&c| c == '#').count();
    let quote = at + 1 + hashes;
    if chars.get(quote) != Some(&'"') {
        return None;
    }
    let closing: Vec<char> = std::iter::once('"').chain(std::iter::repeat_n('#', hashes)).collect();
    Some(
        (quote + 1..chars.len())
            .find(|&i| chars[i..].starts_with(&closing))
            .map_or(chars.len(), |i| i + closing.len()),
    )
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

fn is_word_at(code: &[char], at: usize, word: &str) -> bool {
    let word: Vec<char> = word.chars().collect();
    code[at..].starts_with(&word)
        && (at == 0 || !is_ident(code[at - 1]))
        && !code.get(at + word.len()).copied().is_some_and(is_ident)
}

fn skip_space(code: &[char], at: usize) -> usize {
    (at..code.len())
        .find(|&i| !code[i].is_whitespace())
        .unwrap_or(code.len())
}

fn line_at(code: &[char], at: usize) -> usize {
    code[..at].iter().filter(|&&c| c == '\n').count() + 1
}

fn names(parts: &[&str]) -> Vec<String> {
    parts.iter().map(ToString::to_string).collect()
}
