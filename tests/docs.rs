//! The reference pages `docs/configuration.md` and `docs/metrics.md` are generated from
//! the code: every configuration key from the section types' fields and their doc
//! comments (with the default from `Config::default()`), every metric from
//! `src/metric_names.rs`. This test fails when either page is stale, or when a key or a
//! metric has no doc comment; `make docs` (this test with `FRAUDSTREAM_WRITE_DOCS=1`)
//! writes them.

mod common;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;

use quote::ToTokens;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The `///` lines of `attrs`, joined.
fn doc(attrs: &[syn::Attribute]) -> String {
    attrs
        .iter()
        .filter(|a| a.path().is_ident("doc"))
        .filter_map(|a| match &a.meta {
            syn::Meta::NameValue(nv) => match &nv.value {
                syn::Expr::Lit(syn::ExprLit {
                    lit: syn::Lit::Str(s),
                    ..
                }) => Some(s.value().trim().to_owned()),
                _ => None,
            },
            _ => None,
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The `#[serde(...)]` words of `attrs` as text (`rename = "entity"`, `flatten`, …).
fn serde_words(attrs: &[syn::Attribute]) -> String {
    attrs
        .iter()
        .filter(|a| a.path().is_ident("serde"))
        .map(|a| a.meta.to_token_stream().to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

fn derives_deserialize(attrs: &[syn::Attribute]) -> bool {
    attrs
        .iter()
        .filter(|a| a.path().is_ident("derive"))
        .any(|a| a.meta.to_token_stream().to_string().contains("Deserialize"))
}

/// `rename = "x"` in serde words.
fn renamed(words: &str) -> Option<String> {
    let at = words.find("rename = \"")?;
    let rest = &words[at + "rename = \"".len()..];
    Some(rest[..rest.find('"')?].to_owned())
}

struct Field {
    key: String,
    doc: String,
    ty: syn::Type,
    flatten: bool,
}

struct Struct {
    fields: Vec<Field>,
}

/// The variants of a serde enum, as written in a configuration file.
struct Enum {
    values: Vec<String>,
}

/// Every struct with named fields and every enum that derives `Deserialize`, by name.
fn collect() -> (HashMap<String, Struct>, HashMap<String, Enum>) {
    let mut files = Vec::new();
    common::rust_files(&Path::new(ROOT).join("src"), &mut files);
    common::rust_files(&Path::new(ROOT).join("core/src"), &mut files);
    let (mut structs, mut enums) = (HashMap::new(), HashMap::new());
    let mut ambiguous = Vec::new();
    for f in files {
        let file = syn::parse_file(&std::fs::read_to_string(&f).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        for item in file.items {
            match item {
                syn::Item::Struct(s) if derives_deserialize(&s.attrs) => {
                    let syn::Fields::Named(named) = s.fields else {
                        continue;
                    };
                    let fields = named
                        .named
                        .iter()
                        .map(|n| {
                            let words = serde_words(&n.attrs);
                            let name = n.ident.as_ref().unwrap().to_string();
                            Field {
                                key: renamed(&words).unwrap_or(name),
                                doc: doc(&n.attrs),
                                ty: n.ty.clone(),
                                flatten: words.contains("flatten"),
                            }
                        })
                        .collect();
                    let name = s.ident.to_string();
                    // Two with one name: ambiguous (refused if configuration uses it).
                    if structs.insert(name.clone(), Struct { fields }).is_some() {
                        ambiguous.push(name);
                    }
                }
                syn::Item::Enum(e) if derives_deserialize(&e.attrs) => {
                    let words = serde_words(&e.attrs);
                    let rule = words
                        .split("rename_all = \"")
                        .nth(1)
                        .and_then(|r| r.split('"').next())
                        .unwrap_or("");
                    let values = e
                        .variants
                        .iter()
                        .map(|v| {
                            renamed(&serde_words(&v.attrs))
                                .unwrap_or_else(|| rename(&v.ident.to_string(), rule))
                        })
                        .collect();
                    enums.insert(e.ident.to_string(), Enum { values });
                }
                _ => {}
            }
        }
    }
    for name in ambiguous {
        structs.insert(name, Struct { fields: Vec::new() });
    }
    (structs, enums)
}

/// A variant name under serde's `rename_all` rule.
fn rename(variant: &str, rule: &str) -> String {
    let mut snake = String::new();
    for (i, c) in variant.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            snake.push('_');
        }
        snake.push(c.to_ascii_lowercase());
    }
    match rule {
        "lowercase" => variant.to_lowercase(),
        "snake_case" => snake,
        "kebab-case" => snake.replace('_', "-"),
        _ => variant.to_owned(),
    }
}

/// The type a field holds, under `Option`, `Vec` and paths: its last name, and whether
/// it is a list.
fn inner(ty: &syn::Type) -> (String, bool) {
    if let syn::Type::Path(p) = ty
        && let Some(last) = p.path.segments.last()
    {
        let name = last.ident.to_string();
        if let syn::PathArguments::AngleBracketed(args) = &last.arguments
            && (name == "Option" || name == "Vec" || name == "Box" || name == "Arc")
            && let Some(syn::GenericArgument::Type(t)) = args.args.first()
        {
            let (n, list) = inner(t);
            return (n, list || name == "Vec");
        }
        return (name, false);
    }
    (ty.to_token_stream().to_string(), false)
}

/// The default at `path` of the defaults' TOML, as TOML: `none` when unset, `—` when the
/// table holding it is absent by default (an optional section: see its description).
fn default_at(defaults: &toml::Value, path: &[String]) -> String {
    let mut v = defaults;
    for (i, k) in path.iter().enumerate() {
        match v.get(k) {
            Some(x) => v = x,
            None if i + 1 < path.len() => return "—".into(),
            None => return "none".into(),
        }
    }
    match v {
        toml::Value::Table(t) if t.is_empty() => "none".into(),
        other => other.to_string(),
    }
}

fn cell(text: &str) -> String {
    text.replace('|', "\\|")
}

/// One section (and, after it, its subsections) of the configuration reference.
/// What every section of the reference reads, and the keys found undocumented.
struct Reference<'a> {
    types: &'a (HashMap<String, Struct>, HashMap<String, Enum>),
    defaults: &'a toml::Value,
    missing: Vec<String>,
}

fn section(
    out: &mut String,
    r: &mut Reference<'_>,
    path: &[String],
    about: &str,
    fields: &[&Field],
    list: bool,
) {
    let (types, defaults) = (r.types, r.defaults);
    let (structs, enums) = types;
    let name = path.join(".");
    writeln!(
        out,
        "\n## `{}{name}{}`\n\n{about}\n",
        if list { "[[" } else { "[" },
        if list { "]]" } else { "]" }
    )
    .unwrap();
    writeln!(out, "| key | default | what |\n|---|---|---|").unwrap();
    let mut nested = Vec::new();
    // Flattened structs put their fields in this table, where they stand.
    fn expand<'a>(fields: &[&'a Field], structs: &'a HashMap<String, Struct>) -> Vec<&'a Field> {
        let mut rows = Vec::new();
        for f in fields {
            let (ty, _) = inner(&f.ty);
            match structs.get(&ty) {
                Some(s) if f.flatten => {
                    let inner: Vec<&Field> = s.fields.iter().collect();
                    rows.extend(expand(&inner, structs));
                }
                _ if f.flatten => {} // unknown-key collectors
                _ => rows.push(*f),
            }
        }
        rows
    }
    for f in expand(fields, structs) {
        let (ty, is_list) = inner(&f.ty);
        let key = format!("{name}.{}", f.key);
        if f.doc.is_empty() {
            r.missing.push(key.clone());
        }
        if let Some(s) = structs.get(&ty) {
            assert!(
                !s.fields.is_empty(),
                "{key}: two structs are named {ty}; the reference cannot tell them apart"
            );
            nested.push((f, s, is_list));
            continue;
        }
        let mut what = f.doc.clone();
        if let Some(e) = enums.get(&ty) {
            let values: Vec<String> = e.values.iter().map(|v| format!("`{v}`")).collect();
            write!(what, " One of {}.", values.join(", ")).unwrap();
        }
        let mut p = path.to_vec();
        p.push(f.key.clone());
        let default = if list {
            "required".to_owned()
        } else {
            match default_at(defaults, &p) {
                d if d == "—" => d,
                d => format!("`{}`", cell(&d)),
            }
        };
        writeln!(out, "| `{}` | {default} | {} |", f.key, cell(what.trim())).unwrap();
    }
    if list {
        writeln!(
            out,
            "\nThe default: `{}`.",
            cell(&default_at(defaults, path))
        )
        .unwrap();
    }
    for (f, s, is_list) in nested {
        let mut p = path.to_vec();
        p.push(f.key.clone());
        let fields: Vec<&Field> = s.fields.iter().collect();
        section(out, r, &p, &f.doc, &fields, is_list);
    }
}

/// `docs/configuration.md`, and the keys without a doc comment.
fn configuration() -> (String, Vec<String>) {
    let types = collect();
    let defaults = toml::Value::try_from(fraudstream::config::Config::default()).unwrap();
    let mut out = String::from(
        "# Configuration reference\n\n\
         Every key of the detector's configuration file, generated from the code (the section\n\
         types and their doc comments; defaults from `Config::default()`) by `make docs`;\n\
         `tests/docs.rs` fails when this page is stale. Values are layered: these defaults,\n\
         then the TOML file given with `--config`, then `FRAUDSTREAM__SECTION__KEY`\n\
         environment variables (`FRAUDSTREAM__KAFKA__BROKERS=…`). Unknown keys are refused,\n\
         and a bad value is reported with its full key. Durations are written like `250ms`,\n\
         `10s`, `7d`.\n",
    );
    let root = &types.0["Config"];
    let mut r = Reference {
        types: &types,
        defaults: &defaults,
        missing: Vec::new(),
    };
    for f in &root.fields {
        let (ty, _) = inner(&f.ty);
        let Some(s) = types.0.get(&ty) else {
            panic!("section {} has no struct ({ty})", f.key)
        };
        let fields: Vec<&Field> = s.fields.iter().collect();
        section(
            &mut out,
            &mut r,
            std::slice::from_ref(&f.key),
            &f.doc,
            &fields,
            false,
        );
    }
    (out, r.missing)
}

/// `docs/metrics.md`, and the metrics without a doc comment.
fn metrics() -> (String, Vec<String>) {
    let text = std::fs::read_to_string(Path::new(ROOT).join("src/metric_names.rs")).unwrap();
    let file = syn::parse_file(&text).unwrap();
    let mut out = String::from(
        "# Metrics reference\n\n\
         Every metric the service exports at `/metrics` (Prometheus text format), generated\n\
         from `src/metric_names.rs` by `make docs`; `tests/docs.rs` fails when this page is\n\
         stale. Labels are in the descriptions.\n\n\
         | metric | type | what |\n|---|---|---|\n",
    );
    let mut missing = Vec::new();
    for item in file.items {
        let syn::Item::Const(c) = item else { continue };
        let syn::Expr::Lit(syn::ExprLit {
            lit: syn::Lit::Str(name),
            ..
        }) = &*c.expr
        else {
            continue;
        };
        let d = doc(&c.attrs);
        if d.is_empty() {
            missing.push(name.value());
        }
        let (kind, what) = d.split_once(": ").unwrap_or(("", d.as_str()));
        let mut chars = what.chars();
        let what: String = chars
            .next()
            .map(|c| c.to_uppercase().chain(chars).collect())
            .unwrap_or_default();
        writeln!(
            out,
            "| `{}` | {} | {} |",
            name.value(),
            kind.to_lowercase(),
            cell(&what)
        )
        .unwrap();
    }
    (out, missing)
}

#[test]
fn the_reference_pages_are_generated_and_current() {
    let write = std::env::var_os("FRAUDSTREAM_WRITE_DOCS").is_some();
    for (page, (text, missing)) in [
        ("docs/configuration.md", configuration()),
        ("docs/metrics.md", metrics()),
    ] {
        assert!(missing.is_empty(), "{page}: no doc comment for {missing:?}");
        let path = Path::new(ROOT).join(page);
        if write {
            std::fs::write(&path, &text).unwrap();
            continue;
        }
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            on_disk == text,
            "{page} is stale: run `make docs` (FRAUDSTREAM_WRITE_DOCS=1 cargo test --test docs)"
        );
    }
}

/// docs/capacity.md's fleet table is `fraudstream capacity`'s output for 1,000, 10,000
/// and 100,000 transactions a second, between its two markers.
#[test]
fn the_capacity_table_is_the_commands_output() {
    use fraudstream::capacity::{UnitCosts, markdown};
    const BEGIN: &str = "<!-- capacity:begin (generated: `make docs`) -->\n";
    const END: &str = "<!-- capacity:end -->";
    let path = Path::new(ROOT).join("docs/capacity.md");
    let page = std::fs::read_to_string(&path).unwrap();
    let (head, rest) = page.split_once(BEGIN).expect("the begin marker");
    let (_, tail) = rest.split_once(END).expect("the end marker");
    let table = markdown(&[1_000.0, 10_000.0, 100_000.0], &UnitCosts::MEASURED);
    let want = format!("{head}{BEGIN}{table}{END}{tail}");
    if std::env::var_os("FRAUDSTREAM_WRITE_DOCS").is_some() {
        std::fs::write(&path, want).unwrap();
        return;
    }
    assert!(
        page == want,
        "docs/capacity.md's table is stale: run `make docs` (FRAUDSTREAM_WRITE_DOCS=1 cargo test --test docs)"
    );
}
