//! Finds the groups of files that import each other (strongly connected components of
//! the import graph, Tarjan's algorithm).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

/// File → the files it imports.
pub type Imports = BTreeMap<PathBuf, BTreeSet<PathBuf>>;

/// Every group of two or more files in which each file reaches every other by imports.
pub fn cycles(imports: &Imports) -> Vec<Vec<PathBuf>> {
    let nodes: Vec<&PathBuf> = imports
        .iter()
        .flat_map(|(from, to)| std::iter::once(from).chain(to.iter()))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let index_of: BTreeMap<&PathBuf, usize> =
        nodes.iter().enumerate().map(|(i, n)| (*n, i)).collect();
    let succ: Vec<Vec<usize>> = nodes
        .iter()
        .map(|n| {
            imports
                .get(*n)
                .into_iter()
                .flatten()
                .map(|t| index_of[t])
                .collect()
        })
        .collect();
    let mut t = Tarjan {
        succ: &succ,
        index: vec![None; nodes.len()],
        low: vec![0; nodes.len()],
        on_stack: vec![false; nodes.len()],
        stack: Vec::new(),
        next: 0,
        groups: Vec::new(),
    };
    for v in 0..nodes.len() {
        if t.index[v].is_none() {
            t.visit(v);
        }
    }
    t.groups
        .into_iter()
        .filter(|g| g.len() > 1)
        .map(|g| {
            let mut files: Vec<PathBuf> = g.into_iter().map(|i| nodes[i].clone()).collect();
            files.sort();
            files
        })
        .collect()
}

struct Tarjan<'a> {
    succ: &'a [Vec<usize>],
    index: Vec<Option<usize>>,
    low: Vec<usize>,
    on_stack: Vec<bool>,
    stack: Vec<usize>,
    next: usize,
    groups: Vec<Vec<usize>>,
}

impl Tarjan<'_> {
    // Recursion depth is bounded by the number of files in one crate (tens).
    fn visit(&mut self, v: usize) {
        self.index[v] = Some(self.next);
        self.low[v] = self.next;
        self.next += 1;
        self.stack.push(v);
        self.on_stack[v] = true;
        for &w in &self.succ[v] {
            match self.index[w] {
                None => {
                    self.visit(w);
                    self.low[v] = self.low[v].min(self.low[w]);
                }
                Some(iw) if self.on_stack[w] => self.low[v] = self.low[v].min(iw),
                Some(_) => {}
            }
        }
        if Some(self.low[v]) == self.index[v] {
            let mut group = Vec::new();
            while let Some(w) = self.stack.pop() {
                self.on_stack[w] = false;
                group.push(w);
                if w == v {
                    break;
                }
            }
            self.groups.push(group);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(edges: &[(&str, &str)]) -> Imports {
        let mut g = Imports::new();
        for (a, b) in edges {
            g.entry(PathBuf::from(a))
                .or_default()
                .insert(PathBuf::from(b));
        }
        g
    }

    #[test]
    fn a_pair_that_imports_each_other_is_a_cycle() {
        let c = cycles(&graph(&[("a", "b"), ("b", "a"), ("b", "c")]));
        assert_eq!(c, vec![vec![PathBuf::from("a"), PathBuf::from("b")]]);
    }

    #[test]
    fn a_longer_ring_is_one_cycle_and_a_chain_is_none() {
        assert_eq!(
            cycles(&graph(&[("a", "b"), ("b", "c"), ("c", "a")])).len(),
            1
        );
        assert!(cycles(&graph(&[("a", "b"), ("b", "c"), ("a", "c")])).is_empty());
    }
}
