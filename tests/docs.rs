//! The documentation tells the truth about the code and about itself:
//!
//! - deploy/offload.schema.json and docs/configuration.md are what the code makes of its
//!   config types (`offload config schema`, `offload config reference`), the page has a row
//!   with the code's default for each key that has one, and deploy/offload.example.toml
//!   names the schema and shows the `[http]`, `[engine]`, `[routing]` and `[prices]` keys
//!   at the code's defaults, so a default changed in one place cannot go stale in the
//!   others;
//! - every relative link in the repository's Markdown files leads to a file that exists, and
//!   its anchor, if it has one, to a heading of that file, as GitHub names headings;
//! - every page under docs/ is linked from the README and from docs/README.md;
//! - docs/operations.md's table of metrics has each metric the code records, and no other.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use offload::config::{EngineConfig, HttpConfig, PricesConfig, RoutingConfig};
use regex::Regex;
use serde_json::Value;

/// The page with the configuration table.
const CONFIGURATION: &str = "docs/configuration.md";
/// The configuration's JSON Schema, which the example config names.
const SCHEMA: &str = "deploy/offload.schema.json";

fn sections() -> Vec<(&'static str, serde_json::Map<String, Value>)> {
    let map = |v: Value| v.as_object().unwrap().clone();
    vec![
        ("http", map(serde_json::to_value(HttpConfig::default()).unwrap())),
        ("engine", map(serde_json::to_value(EngineConfig::default()).unwrap())),
        ("routing", map(serde_json::to_value(RoutingConfig::default()).unwrap())),
        ("prices", map(serde_json::to_value(PricesConfig::default()).unwrap())),
    ]
}

#[test]
fn the_committed_schema_is_the_codes() {
    let committed = std::fs::read_to_string(SCHEMA).unwrap_or_default();
    assert!(
        committed == offload::config::schema::schema_json(),
        "{SCHEMA} is stale; regenerate it with `cargo run -q -- config schema > {SCHEMA}`"
    );
}

#[test]
fn the_configuration_page_is_the_codes() {
    let committed = std::fs::read_to_string(CONFIGURATION).unwrap_or_default();
    assert!(
        committed == offload::config::reference::page(),
        "{CONFIGURATION} is stale; regenerate it with \
         `cargo run -q -- config reference > {CONFIGURATION}` (its prose is in src/config/configuration.md.in)"
    );
}

/// Every key of the schema that has a default has a row on the page with that default:
/// the generator leaves none out. The keys are walked here on their own, not as the
/// generator walks them.
#[test]
fn the_configuration_page_has_each_default_the_code_has() {
    let schema = serde_json::to_value(offload::config::schema::schema()).unwrap();
    let page = std::fs::read_to_string(CONFIGURATION).unwrap();
    let defs = schema["definitions"].as_object().unwrap();
    let mut defaults = vec![];
    // (path, schema) pairs still to look into.
    let mut todo = vec![(String::new(), &schema)];
    while let Some((path, s)) = todo.pop() {
        let s = match s["$ref"]
            .as_str()
            .or(s["allOf"][0]["$ref"].as_str())
            .or(s["anyOf"][0]["$ref"].as_str())
        {
            Some(r) => &defs[r.trim_start_matches("#/definitions/")],
            None => s,
        };
        for (key, p) in s["properties"].as_object().into_iter().flatten() {
            let name = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
            match p.get("default") {
                Some(v) if !v.is_object() && !v.is_null() => defaults.push((name.clone(), v.clone())),
                _ => {}
            }
            todo.push((name, p));
        }
        for (key, variant) in [("NAME", &s["additionalProperties"])] {
            if variant.is_object() {
                todo.push((format!("{path}.{key}"), variant));
            }
        }
        for variant in s["oneOf"].as_array().into_iter().flatten() {
            todo.push((path.clone(), variant));
        }
    }
    assert!(defaults.len() > 100, "only {} defaults found", defaults.len());
    for (key, value) in defaults {
        let written = match &value {
            Value::String(s) => s.clone(),
            Value::Array(a) if a.is_empty() => "[]".into(),
            other if !other.is_array() => other.to_string(),
            _ => continue, // lists of values: their row is checked below by key alone
        };
        let name = format!("| `{key}` |");
        assert!(
            page.lines().any(|l| l.starts_with(&name)
                && l.split(" | ").nth(2) == Some(format!("`{written}`").as_str())),
            "{CONFIGURATION} has no row for {key} with its default `{written}`"
        );
    }
}

#[test]
fn the_example_config_names_the_schema() {
    let text = std::fs::read_to_string("deploy/offload.example.toml").unwrap();
    assert_eq!(text.lines().next(), Some("#:schema ./offload.schema.json"));
}

#[test]
fn the_example_config_has_each_default_the_code_has() {
    let text = std::fs::read_to_string("deploy/offload.example.toml").unwrap();
    for (section, keys) in sections() {
        let header = format!("[{section}]");
        let body: Vec<&str> = text
            .lines()
            .skip_while(|l| l.trim() != header)
            .skip(1)
            .take_while(|l| !l.trim_start().starts_with('['))
            .collect();
        assert!(!body.is_empty(), "deploy/offload.example.toml has no {header}");
        for (key, value) in keys {
            let line = body
                .iter()
                .map(|l| l.split('#').next().unwrap().trim())
                .find(|l| l.split('=').next().unwrap().trim() == key)
                .unwrap_or_else(|| panic!("{header} in the example config has no {key}"));
            let written = line.split_once('=').unwrap().1.trim();
            // TOML writes these values as JSON does: numbers bare, strings quoted.
            assert_eq!(written, value.to_string(), "the example config's {section}.{key}");
        }
    }
}

/// The metrics table of docs/operations.md has a row for each metric the code records, with
/// its kind, and none for a metric it does not.
#[test]
fn the_operations_page_lists_every_metric_the_gateway_exports() {
    use common::exported::Kind;
    let page = std::fs::read_to_string("docs/operations.md").unwrap();
    let rows: HashMap<String, String> = page
        .lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let name = cells.get(1)?.strip_prefix("`offload_")?.strip_suffix('`')?;
            Some((format!("offload_{name}"), cells.get(2)?.to_string()))
        })
        .collect();
    let exported = common::exported::metrics();
    for (name, kind) in &exported {
        let written = rows
            .get(name)
            .unwrap_or_else(|| panic!("docs/operations.md has no row for {name}"));
        let expected = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        assert!(written.starts_with(expected), "{name} is a {expected}, the page says {written}");
    }
    let stale: Vec<_> = rows.keys().filter(|n| !exported.contains_key(*n)).collect();
    assert!(stale.is_empty(), "docs/operations.md lists metrics the code does not record: {stale:?}");
}

/// The repository's root: the crate's own folder.
fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every Markdown file under `dir`, leaving out `target/` (build output and the test venvs),
/// `node_modules` and hidden folders (`.git`).
fn markdown_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap()).collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name().to_string_lossy().into_owned();
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            if !(name.starts_with('.') || name == "target" || name == "node_modules") {
                markdown_files(&entry.path(), out);
            }
        } else if kind.is_file() && name.ends_with(".md") {
            out.push(entry.path());
        }
    }
}

/// The text with its fenced code blocks (``` or ~~~) blanked: their characters become
/// spaces, so lines and byte offsets stay where they were.
fn blank_fences(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    // The open fence's character and length, while inside a fenced block.
    let mut fence: Option<(char, usize)> = None;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_start();
        let marker = trimmed.chars().next().filter(|c| *c == '`' || *c == '~');
        let run = marker.map_or(0, |m| trimmed.chars().take_while(|c| *c == m).count());
        let inside = match fence {
            Some((c, n)) => {
                if marker == Some(c) && run >= n && trimmed[run..].trim().is_empty() {
                    fence = None;
                }
                true
            }
            None if run >= 3 => {
                fence = Some((marker.unwrap(), run));
                true
            }
            None => false,
        };
        if inside {
            // A space for each byte, so that a character of several bytes keeps its width.
            out.extend(line.bytes().map(|b| if b == b'\n' { '\n' } else { ' ' }));
        } else {
            out.push_str(line);
        }
    }
    out
}

/// The text with its inline code spans blanked: a run of backticks up to the next run of
/// the same length within the paragraph (a code span does not cross a blank line).
fn blank_code_spans(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = bytes.to_vec();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'`' {
            i += 1;
            continue;
        }
        let n = bytes[i..].iter().take_while(|b| **b == b'`').count();
        let end = bytes[i..].windows(2).position(|w| w == b"\n\n").map_or(bytes.len(), |p| i + p);
        let mut j = i + n;
        let mut close = None;
        while j < end {
            let m = bytes[j..end].iter().take_while(|b| **b == b'`').count();
            if m == n {
                close = Some(j + m);
                break;
            }
            j += m.max(1);
        }
        match close {
            Some(stop) => {
                for b in &mut out[i..stop] {
                    if !b.is_ascii_whitespace() {
                        *b = b' ';
                    }
                }
                i = stop;
            }
            None => i += n,
        }
    }
    // Whole UTF-8 sequences (no byte of one is ASCII) became spaces, so this is UTF-8.
    String::from_utf8(out).unwrap()
}

/// The anchors GitHub gives a file's headings: the heading's text (a link's text, code
/// without its backticks) lowercased, every character that is not a letter, a digit, a
/// space, `-` or `_` dropped, spaces made `-`; a repeated anchor gets `-1`, `-2`, ...
/// Lines in fenced code blocks are not headings.
fn anchors(text: &str) -> BTreeSet<String> {
    let heading = Regex::new(r"^ {0,3}#{1,6}[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$").unwrap();
    let link = Regex::new(r"!?\[([^\]]*)\]\([^)]*\)").unwrap();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut out = BTreeSet::new();
    for line in blank_fences(text).lines() {
        let Some(m) = heading.captures(line) else {
            continue;
        };
        let title = link.replace_all(&m[1], "$1");
        let slug: String = title
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
            .map(|c| if c == ' ' { '-' } else { c })
            .collect();
        let n = seen.entry(slug.clone()).or_insert(0);
        out.insert(if *n == 0 { slug } else { format!("{slug}-{n}") });
        *n += 1;
    }
    out
}

/// A link found in a Markdown file: the line it is on, as written, and its destination.
struct Link {
    line: usize,
    written: String,
    target: String,
}

/// The inline links and images of a Markdown file, `[text](dest)` and `![alt](dest)`
/// (with an optional title), outside code blocks and code spans.
fn links(text: &str) -> Vec<Link> {
    let pattern =
        Regex::new(r#"!?\[[^\[\]]*\]\(\s*<?([^()<>\s]*)>?(?:\s+"[^"]*"|\s+'[^']*')?\s*\)"#)
            .unwrap();
    let prose = blank_code_spans(&blank_fences(text));
    pattern
        .captures_iter(&prose)
        .map(|c| {
            let whole = c.get(0).unwrap();
            Link {
                line: prose[..whole.start()].matches('\n').count() + 1,
                written: text[whole.range()].replace('\n', " "),
                target: c[1].to_string(),
            }
        })
        .collect()
}

/// Where a relative link's destination points, and its anchor (empty if none); None for a
/// link elsewhere (http, https, mailto).
fn resolve(file: &Path, target: &str) -> Option<(PathBuf, String)> {
    let lower = target.to_ascii_lowercase();
    if ["http://", "https://", "mailto:"].iter().any(|s| lower.starts_with(s)) {
        return None;
    }
    let (path, anchor) = target.split_once('#').unwrap_or((target, ""));
    let resolved = if path.is_empty() {
        file.to_path_buf()
    } else if let Some(from_root) = path.strip_prefix('/') {
        root().join(from_root)
    } else {
        file.parent().unwrap().join(path)
    };
    Some((resolved, anchor.to_string()))
}

/// A path as the messages write it: `..` and `.` worked out, and from the repository's
/// root when it is inside it.
fn shown(path: &Path) -> String {
    let mut normal = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                normal.pop();
            }
            other => normal.push(other),
        }
    }
    let root = root();
    normal.strip_prefix(&root).unwrap_or(&normal).display().to_string()
}

/// Why each relative link of `files` is broken: "file:line: link: why".
fn broken_links(files: &[PathBuf]) -> Vec<String> {
    let mut headings: HashMap<PathBuf, BTreeSet<String>> = HashMap::new();
    let mut broken = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(file).unwrap();
        let name = shown(file);
        for link in links(&text) {
            let Some((path, anchor)) = resolve(file, &link.target) else {
                continue;
            };
            let at = format!("{name}:{}: {}", link.line, link.written);
            if !path.exists() {
                broken.push(format!("{at}: {} does not exist", shown(&path)));
                continue;
            }
            let markdown = path.extension().is_some_and(|e| e == "md") && path.is_file();
            if anchor.is_empty() || !markdown {
                continue;
            }
            let known = headings
                .entry(path.canonicalize().unwrap())
                .or_insert_with(|| anchors(&std::fs::read_to_string(&path).unwrap()));
            if !known.contains(&anchor) {
                broken
                    .push(format!("{at}: no heading of {} has the anchor #{anchor}", shown(&path)));
            }
        }
    }
    broken
}

#[test]
fn every_relative_link_and_anchor_leads_somewhere() {
    let mut files = Vec::new();
    markdown_files(&root(), &mut files);
    for must in ["README.md", "BENCHMARKS.md", "docs/README.md", CONFIGURATION] {
        assert!(files.contains(&root().join(must)), "{must} was not found among {files:?}");
    }
    let broken = broken_links(&files);
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

/// Each page under docs/ is linked from the README's "Where to go next" and from the
/// documentation's index, so that a reader who starts at either finds it.
#[test]
fn every_docs_page_is_linked_from_the_readme_and_the_index() {
    let root = root();
    let mut pages = Vec::new();
    markdown_files(&root.join("docs"), &mut pages);
    for index in ["README.md", "docs/README.md"] {
        let file = root.join(index);
        let linked: BTreeSet<PathBuf> = links(&std::fs::read_to_string(&file).unwrap())
            .iter()
            .filter_map(|l| resolve(&file, &l.target))
            .filter_map(|(path, _)| path.canonicalize().ok())
            .collect();
        for page in &pages {
            if *page == root.join("docs/README.md") && index == "docs/README.md" {
                continue;
            }
            assert!(
                linked.contains(&page.canonicalize().unwrap()),
                "{index} has no link to {}",
                page.strip_prefix(&root).unwrap().display()
            );
        }
    }
}

/// The link checker itself: what it reads as a link or a heading, and what it does not.
#[test]
fn the_link_checker_reads_links_and_headings_as_github_does() {
    let text = "# Top\n\n## The `[routing]` section: a (b) & c\n\n## Top\n\n### Top\n\n\
                ```sh\n# not a heading: « × »\n[no](nowhere.md)\n```\n\n\
                See [a](#top-1), `[no](code.md)`, ![img](pic.png \"title\") and\n\
                [split\ntext](other.md#x), [web](https://example.com/(x)).\n";
    let found = anchors(text);
    let want: BTreeSet<String> = ["top", "the-routing-section-a-b--c", "top-1", "top-2"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(found, want);
    let found = links(text);
    assert_eq!(found[0].written, "[a](#top-1)");
    assert_eq!(found[2].written, "[split text](other.md#x)");
    let targets: Vec<(usize, String)> = found.into_iter().map(|l| (l.line, l.target)).collect();
    assert_eq!(
        targets,
        [(14, "#top-1".to_string()), (14, "pic.png".to_string()), (15, "other.md#x".to_string())]
    );
    // A broken link and a broken anchor are both reported, with the file and the line.
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("page.md");
    std::fs::write(&page, "# Here\n\n[ok](#here) [gone](missing.md)\n[bad](#there)\n").unwrap();
    let broken = broken_links(&[page]);
    assert_eq!(broken.len(), 2, "{broken:?}");
    assert!(broken[0].contains("page.md:3: [gone](missing.md)"), "{}", broken[0]);
    assert!(broken[1].contains("page.md:4: [bad](#there)"), "{}", broken[1]);
}
