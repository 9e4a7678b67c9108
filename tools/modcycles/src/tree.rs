//! The module tree of one crate: which file holds which module, found by following
//! `mod name;` declarations from the crate root the way rustc does.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A module's absolute path inside its crate (`[]` is the crate root).
pub type ModPath = Vec<String>;

/// Why a crate could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    /// A source file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A source file is not valid Rust.
    #[error("cannot parse {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        source: syn::Error,
    },
    /// `mod name;` names a file that does not exist.
    #[error("module {name} declared in {from} has no file (looked for {candidates})")]
    Missing {
        /// The declared module.
        name: String,
        /// The declaring file.
        from: PathBuf,
        /// The paths tried.
        candidates: String,
    },
}

/// The parsed files of one crate and the module each holds.
pub struct CrateTree {
    /// Module path → the file its items are written in (inline modules map to the
    /// file that contains them).
    modules: BTreeMap<ModPath, PathBuf>,
    /// Every file of the crate, parsed, with the module path of its top level.
    files: BTreeMap<PathBuf, (ModPath, syn::File)>,
}

impl CrateTree {
    /// Reads the crate whose root file is `root`.
    pub fn load(root: &Path) -> Result<Self, TreeError> {
        let mut tree = CrateTree {
            modules: BTreeMap::new(),
            files: BTreeMap::new(),
        };
        let dir = root.parent().unwrap_or(Path::new(".")).to_path_buf();
        tree.load_file(root, Vec::new(), &dir)?;
        Ok(tree)
    }

    /// The crate's files with the module path of each file's top level and its syntax.
    pub fn files(&self) -> &BTreeMap<PathBuf, (ModPath, syn::File)> {
        &self.files
    }

    /// The file that holds module `path`, if it is a module of this crate.
    pub fn file_of(&self, path: &[String]) -> Option<&PathBuf> {
        self.modules.get(path)
    }

    /// Parses `file` as module `path`; its `mod x;` children live in `child_dir`.
    fn load_file(&mut self, file: &Path, path: ModPath, child_dir: &Path) -> Result<(), TreeError> {
        let file = file.to_path_buf();
        let text = std::fs::read_to_string(&file).map_err(|source| TreeError::Read {
            path: file.clone(),
            source,
        })?;
        let syntax = syn::parse_file(&text).map_err(|source| TreeError::Parse {
            path: file.clone(),
            source,
        })?;
        self.modules.insert(path.clone(), file.clone());
        let file_dir = file.parent().unwrap_or(Path::new(".")).to_path_buf();
        self.load_items(&syntax.items, &file, &path, child_dir, &file_dir)?;
        self.files.insert(file, (path, syntax));
        Ok(())
    }

    /// Follows the module declarations among `items` (of module `path` in `file`).
    fn load_items(
        &mut self,
        items: &[syn::Item],
        file: &Path,
        path: &ModPath,
        child_dir: &Path,
        path_attr_dir: &Path,
    ) -> Result<(), TreeError> {
        for item in items {
            let syn::Item::Mod(m) = item else { continue };
            let name = m.ident.to_string();
            let mut child_path = path.clone();
            child_path.push(name.clone());
            let explicit = path_attribute(&m.attrs);
            match &m.content {
                // An inline module: same file; its own `mod x;` children live one
                // directory further down.
                Some((_, inner)) => {
                    self.modules.insert(child_path.clone(), file.to_path_buf());
                    let dir = child_dir.join(&name);
                    let attr_dir = match &explicit {
                        Some(p) => path_attr_dir.join(p),
                        None => dir.clone(),
                    };
                    self.load_items(inner, file, &child_path, &dir, &attr_dir)?;
                }
                None => {
                    let candidates = match &explicit {
                        Some(p) => vec![path_attr_dir.join(p)],
                        None => vec![
                            child_dir.join(format!("{name}.rs")),
                            child_dir.join(&name).join("mod.rs"),
                        ],
                    };
                    let Some(found) = candidates.iter().find(|c| c.is_file()) else {
                        return Err(TreeError::Missing {
                            name,
                            from: file.to_path_buf(),
                            candidates: candidates
                                .iter()
                                .map(|c| c.display().to_string())
                                .collect::<Vec<_>>()
                                .join(", "),
                        });
                    };
                    // `foo/mod.rs` and files named by `#[path]` keep their children
                    // beside them; `foo.rs` keeps them in `foo/`.
                    let is_mod_rs = found.file_name().is_some_and(|f| f == "mod.rs");
                    let grand_dir = if is_mod_rs || explicit.is_some() {
                        found.parent().unwrap_or(Path::new(".")).to_path_buf()
                    } else {
                        child_dir.join(&name)
                    };
                    self.load_file(&found.clone(), child_path, &grand_dir)?;
                }
            }
        }
        Ok(())
    }
}

/// The value of a `#[path = "..."]` attribute.
fn path_attribute(attrs: &[syn::Attribute]) -> Option<String> {
    attrs.iter().find_map(|a| {
        let syn::Meta::NameValue(nv) = &a.meta else {
            return None;
        };
        if !nv.path.is_ident("path") {
            return None;
        }
        match &nv.value {
            syn::Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Str(s),
                ..
            }) => Some(s.value()),
            _ => None,
        }
    })
}
