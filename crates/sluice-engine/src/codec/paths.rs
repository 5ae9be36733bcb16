//! The wanted fields of a record as a tree of keys, so that the parse stage descends only into
//! the nested objects that hold a wanted field and skips everything else.

use sluice_core::FieldPath;

/// What a key of an object is to the parse stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyMatch {
    /// A wanted field (`wanted`: its capture slot), the way to wanted fields nested in it
    /// (`inner`: the node of its object), or both.
    Field {
        wanted: Option<usize>,
        inner: Option<u32>,
    },
    /// The reserved output field, at the top level.
    Reserved,
    /// Nothing wanted: skipped.
    Other,
}

/// One object level: its keys that lead to wanted fields.
#[derive(Debug, Clone, Default)]
struct Node {
    keys: Vec<(Box<str>, KeyMatch)>,
}

/// The wanted paths, merged into a tree of object levels (node 0 is the record).
#[derive(Debug, Clone)]
pub(crate) struct PathTree {
    nodes: Vec<Node>,
    reserved: &'static str,
}

impl PathTree {
    /// An empty tree; `reserved` is the top-level key an input record may not have.
    pub(crate) fn new(reserved: &'static str) -> Self {
        PathTree {
            nodes: vec![Node::default()],
            reserved,
        }
    }

    /// Adds `path`, captured into slot `wanted`.
    pub(crate) fn insert(&mut self, path: &FieldPath, wanted: usize) {
        let mut node = 0usize;
        let keys = path.keys();
        for (depth, key) in keys.iter().enumerate() {
            let last = depth + 1 == keys.len();
            let at = match self.nodes[node].keys.iter().position(|(k, _)| &**k == key) {
                Some(at) => at,
                None => {
                    let empty = KeyMatch::Field {
                        wanted: None,
                        inner: None,
                    };
                    self.nodes[node].keys.push((key.as_str().into(), empty));
                    self.nodes[node].keys.len() - 1
                }
            };
            let next_node = self.nodes.len() as u32;
            let KeyMatch::Field { wanted: w, inner } = &mut self.nodes[node].keys[at].1 else {
                unreachable!("only fields are inserted");
            };
            if last {
                *w = Some(wanted);
                return;
            }
            let child = *inner.get_or_insert(next_node);
            if child == next_node {
                self.nodes.push(Node::default());
            }
            node = child as usize;
        }
    }

    /// What key `name` of the object at `node` is.
    #[inline]
    pub(crate) fn lookup(&self, node: u32, name: &str) -> KeyMatch {
        self.lookup_bytes(node, name.as_bytes())
    }

    /// [`KeyTree::lookup`] of a key given as bytes (the scanner's, which need not be checked
    /// as UTF-8 first: a key that is not cannot match).
    #[inline]
    pub(crate) fn lookup_bytes(&self, node: u32, name: &[u8]) -> KeyMatch {
        for (key, m) in &self.nodes[node as usize].keys {
            if key.as_bytes() == name {
                return *m;
            }
        }
        if node == 0 && name == self.reserved.as_bytes() {
            KeyMatch::Reserved
        } else {
            KeyMatch::Other
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_paths_share_their_prefix() {
        let mut tree = PathTree::new("features");
        let path = |t: &str| FieldPath::parse(t).expect("valid");
        tree.insert(&path("ts"), 0);
        tree.insert(&path("user.id"), 1);
        tree.insert(&path("user.`geo.ip`"), 2);
        tree.insert(&path("user"), 3);
        assert_eq!(
            tree.lookup(0, "ts"),
            KeyMatch::Field {
                wanted: Some(0),
                inner: None
            }
        );
        let KeyMatch::Field {
            wanted: Some(3),
            inner: Some(user),
        } = tree.lookup(0, "user")
        else {
            panic!("user is wanted and leads to nested fields");
        };
        assert_eq!(
            tree.lookup(user, "geo.ip"),
            KeyMatch::Field {
                wanted: Some(2),
                inner: None
            }
        );
        assert_eq!(tree.lookup(user, "geo"), KeyMatch::Other);
        assert_eq!(tree.lookup(0, "features"), KeyMatch::Reserved);
        assert_eq!(tree.lookup(user, "features"), KeyMatch::Other);
    }
}
