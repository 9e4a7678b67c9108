//! Which files each file of a crate imports: every path a file writes that starts at
//! `crate`, `super`, `self` or a child module, resolved to the file of the module it names.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use proc_macro2::{TokenStream, TokenTree};
use syn::visit::Visit;

use crate::graph::Imports;
use crate::tree::{CrateTree, ModPath};

/// Names a module brings into scope with `use` (its re-exports among them): module →
/// name → the path it stands for, so that `crate::Error` re-exported by the crate root
/// counts as an import of the file that defines `Error`, not of the root.
type Aliases = BTreeMap<ModPath, BTreeMap<String, Vec<String>>>;

/// One path per imported file that shows why it is imported: file → imported file →
/// the path as written.
pub type Evidence = BTreeMap<PathBuf, BTreeMap<PathBuf, String>>;

/// The import graph of `tree`'s files, and the evidence for each edge.
pub fn file_imports(tree: &CrateTree) -> (Imports, Evidence) {
    let mut imports = Imports::new();
    let mut evidence = Evidence::new();
    let mut aliases = Aliases::new();
    let mut per_file = Vec::new();
    for (file, (path, syntax)) in tree.files() {
        let mut paths = Vec::new();
        collect_items(&syntax.items, path, &mut paths, &mut aliases);
        per_file.push((file, paths));
    }
    for (file, paths) in per_file {
        let mut targets = BTreeSet::new();
        let why = evidence.entry(file.clone()).or_default();
        for (module, segments) in &paths {
            if let Some(target) = resolve(tree, &aliases, module, segments, 0) {
                if target != file {
                    targets.insert(target.clone());
                    why.entry(target.clone())
                        .or_insert_with(|| segments.join("::"));
                }
            }
        }
        imports.insert(file.clone(), targets);
    }
    (imports, evidence)
}

/// Resolves `segments`, written in module `module`, to the file of the deepest module
/// it names; `None` for paths that leave the crate or name only local items.
fn resolve<'t>(
    tree: &'t CrateTree,
    aliases: &Aliases,
    module: &ModPath,
    segments: &[String],
    depth: u32,
) -> Option<&'t PathBuf> {
    // A lone `self` is a value (the receiver), a lone `crate`/`super` names no item.
    if segments.len() < 2 && matches!(segments.first()?.as_str(), "crate" | "self" | "super") {
        return None;
    }
    let (mut base, rest): (ModPath, &[String]) = match segments.first()?.as_str() {
        "crate" => (Vec::new(), &segments[1..]),
        "self" => (module.clone(), &segments[1..]),
        "super" => {
            let mut base = module.clone();
            let mut i = 0;
            while segments.get(i).is_some_and(|s| s == "super") {
                base.pop()?;
                i += 1;
            }
            (base, &segments[i..])
        }
        first => {
            let mut child = module.clone();
            child.push(first.to_string());
            tree.file_of(&child)?;
            (module.clone(), segments)
        }
    };
    let mut found = tree.file_of(&base);
    for (i, segment) in rest.iter().enumerate() {
        // A name the module imported with `use`: follow it (bounded, against `use` loops).
        if let Some(target) = aliases.get(&base).and_then(|a| a.get(segment)) {
            if depth < 8 {
                let mut through = target.clone();
                through.extend(rest[i + 1..].iter().cloned());
                if let Some(f) = resolve(tree, aliases, &base, &through, depth + 1) {
                    return Some(f);
                }
            }
        }
        base.push(segment.clone());
        match tree.file_of(&base) {
            Some(f) => found = Some(f),
            None => break,
        }
    }
    found
}

/// Collects `(module, path)` for every path among `items` of module `module`, descending
/// into inline modules with their own module path.
fn collect_items(
    items: &[syn::Item],
    module: &ModPath,
    out: &mut Vec<(ModPath, Vec<String>)>,
    aliases: &mut Aliases,
) {
    for item in items {
        match item {
            syn::Item::Mod(m) => {
                if let Some((_, inner)) = &m.content {
                    let mut child = module.clone();
                    child.push(m.ident.to_string());
                    collect_items(inner, &child, out, aliases);
                }
            }
            syn::Item::Use(u) => {
                let mut found = Vec::new();
                use_paths(
                    &u.tree,
                    &mut Vec::new(),
                    &mut found,
                    aliases.entry(module.clone()).or_default(),
                );
                out.extend(found.into_iter().map(|p| (module.clone(), p)));
            }
            other => {
                let mut v = PathCollector { paths: Vec::new() };
                v.visit_item(other);
                out.extend(v.paths.into_iter().map(|p| (module.clone(), p)));
            }
        }
    }
}

/// Expands a `use` tree into the full paths it imports (`self` in a group names the prefix).
/// Names it brings into scope go to `names`.
fn use_paths(
    tree: &syn::UseTree,
    prefix: &mut Vec<String>,
    out: &mut Vec<Vec<String>>,
    names: &mut BTreeMap<String, Vec<String>>,
) {
    match tree {
        syn::UseTree::Path(p) => {
            prefix.push(p.ident.to_string());
            use_paths(&p.tree, prefix, out, names);
            prefix.pop();
        }
        syn::UseTree::Name(n) => {
            let full = with_last(prefix, &n.ident);
            let name = if n.ident == "self" {
                prefix.last().cloned()
            } else {
                Some(n.ident.to_string())
            };
            if let Some(name) = name {
                names.insert(name, full.clone());
            }
            out.push(full);
        }
        syn::UseTree::Rename(r) => {
            let full = with_last(prefix, &r.ident);
            names.insert(r.rename.to_string(), full.clone());
            out.push(full);
        }
        syn::UseTree::Glob(_) => out.push(prefix.clone()),
        syn::UseTree::Group(g) => {
            for t in &g.items {
                use_paths(t, prefix, out, names);
            }
        }
    }
}

fn with_last(prefix: &[String], last: &syn::Ident) -> Vec<String> {
    let mut p = prefix.to_vec();
    if last != "self" {
        p.push(last.to_string());
    }
    p
}

/// Gathers the paths of one item, including `crate::`/`super::`/`self::` paths written
/// inside macro invocations (which the parser leaves as tokens).
struct PathCollector {
    paths: Vec<Vec<String>>,
}

impl<'ast> Visit<'ast> for PathCollector {
    fn visit_path(&mut self, path: &'ast syn::Path) {
        self.paths
            .push(path.segments.iter().map(|s| s.ident.to_string()).collect());
        syn::visit::visit_path(self, path);
    }

    fn visit_visibility(&mut self, _: &'ast syn::Visibility) {
        // `pub(crate)` and `pub(super)` say who may use an item; they import nothing.
    }

    fn visit_item_mod(&mut self, _: &'ast syn::ItemMod) {
        // Inline modules nested in functions are rare and keep their own paths; the
        // module-level ones are walked by `collect_items` with the right module path.
    }

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        self.visit_path(&mac.path);
        macro_paths(mac.tokens.clone(), &mut self.paths);
    }
}

/// Finds `crate::a::b`, `super::a` and `self::a` sequences in a token stream.
fn macro_paths(tokens: TokenStream, out: &mut Vec<Vec<String>>) {
    let tokens: Vec<TokenTree> = tokens.into_iter().collect();
    let mut i = 0;
    while i < tokens.len() {
        match &tokens[i] {
            TokenTree::Group(g) => macro_paths(g.stream(), out),
            TokenTree::Ident(id) if id == "crate" || id == "super" || id == "self" => {
                let mut path = vec![id.to_string()];
                let mut j = i + 1;
                while let (
                    Some(TokenTree::Punct(a)),
                    Some(TokenTree::Punct(b)),
                    Some(TokenTree::Ident(next)),
                ) = (tokens.get(j), tokens.get(j + 1), tokens.get(j + 2))
                {
                    if a.as_char() != ':' || b.as_char() != ':' {
                        break;
                    }
                    path.push(next.to_string());
                    j += 3;
                }
                if path.len() > 1 {
                    out.push(path);
                }
                i = j.max(i + 1);
                continue;
            }
            _ => {}
        }
        i += 1;
    }
}
