//! Flame graphs: the samples' stacks merged into a call tree of bounded size as they
//! stream by, then drawn as an SVG by inferno.
//!
//! The tree holds at most [`MAX_NODES`] nodes. When it is full, the nodes of the smaller
//! half of values go (a node's children are never larger than it, so whole subtrees go)
//! and their value stays in their caller, where it shows as the caller's own time: the
//! lossy-counting bound, so a frame wider than the largest threshold used is never lost.
//! Frames narrower than inferno draws go before drawing, and the folded text inferno
//! reads is kept under [`MAX_FOLDED_BYTES`] the same way.

use std::collections::HashMap;

use super::{ProfileError, memory::Allowance, tables::FrameIndex};

/// Nodes the call tree holds at most.
pub const MAX_NODES: usize = 1 << 16;

/// Frames of a stack the tree follows from the root; deeper frames count in the last one.
pub const MAX_DEPTH: usize = 1024;

/// The most folded text (one `root;…;leaf value` line per drawn stack) handed to inferno.
pub const MAX_FOLDED_BYTES: usize = 8 << 20;

/// inferno's narrowest frame: 0.1 pixel of a 1200-pixel image (its defaults).
const DRAWN_FRACTION: f64 = 0.1 / 1200.0;

/// What inferno allocates per frame drawn, by measure (frame records, sort keys, colours).
const INFERNO_BYTES_PER_NODE: u64 = 160;

/// The frame that stands for root frames merged away.
pub const MERGED: &str = "[merged]";

/// Scratch per node while pruning and folding: a renumbering, path lengths, child sums.
const SCRATCH_BYTES_PER_NODE: usize = 4 + 8 + 8 + 8;

#[derive(Debug, Clone, Copy)]
struct Node {
    parent: u32,
    key: u32,
    value: i64,
}

/// The call tree of the samples seen so far, root first.
#[derive(Debug)]
pub struct FlameTree {
    nodes: Vec<Node>,
    children: HashMap<(u32, u32), u32>,
    /// The largest value a pruned node had: the most any frame may be under-drawn by.
    merged_below: i64,
    /// The value of pruned root frames: drawn as one [`MERGED`] frame, so that the graph's
    /// width stays the total.
    merged_at_root: i64,
    charged: u64,
}

fn map_bytes(entries: usize) -> u64 {
    if entries == 0 {
        return 0;
    }
    // hashbrown: buckets are a power of two at most 7/8 full, one control byte each.
    let buckets = (entries * 8 / 7 + 1).next_power_of_two() as u64;
    buckets * (std::mem::size_of::<((u32, u32), u32)>() as u64 + 1)
}

impl FlameTree {
    /// An empty tree; it pays for its nodes as it grows.
    pub fn new(memory: &mut Allowance) -> Result<Self, ProfileError> {
        let mut tree =
            Self { nodes: Vec::new(), children: HashMap::new(), merged_below: 0, merged_at_root: 0, charged: 0 };
        tree.push(Node { parent: 0, key: u32::MAX, value: 0 }, memory)?;
        Ok(tree)
    }

    /// Adds a node, paying for the capacity it adds to the nodes, the child map and the
    /// scratch arrays pruning and folding use.
    fn push(&mut self, node: Node, memory: &mut Allowance) -> Result<(), ProfileError> {
        if self.nodes.len() == self.nodes.capacity() {
            let capacity = (self.nodes.capacity() * 2).clamp(64, MAX_NODES);
            let added = (capacity - self.nodes.capacity()) as u64;
            let map = map_bytes(capacity).saturating_sub(map_bytes(self.nodes.capacity()));
            let bytes = added * (std::mem::size_of::<Node>() + SCRATCH_BYTES_PER_NODE) as u64 + map;
            memory.charge(bytes)?;
            self.charged += bytes;
            self.nodes.reserve_exact(capacity - self.nodes.len());
            self.children.reserve(capacity.saturating_sub(self.children.len()));
        }
        self.nodes.push(node);
        Ok(())
    }

    /// Adds `value` along `stack` (root first).
    pub fn add(&mut self, stack: &[u32], value: i64, memory: &mut Allowance) -> Result<(), ProfileError> {
        let stack = &stack[..stack.len().min(MAX_DEPTH)];
        if self.nodes.len() + stack.len() > MAX_NODES {
            self.prune_half(memory)?;
        }
        let mut at = 0u32;
        self.nodes[0].value = self.nodes[0].value.wrapping_add(value);
        for &key in stack {
            let next = self.nodes.len() as u32;
            let child = match self.children.get(&(at, key)) {
                Some(child) => *child,
                None => {
                    self.push(Node { parent: at, key, value: 0 }, memory)?;
                    self.children.insert((at, key), next);
                    next
                }
            };
            let node = &mut self.nodes[child as usize];
            node.value = node.value.wrapping_add(value);
            at = child;
        }
        Ok(())
    }

    /// Drops the nodes whose value is at most the median.
    fn prune_half(&mut self, memory: &mut Allowance) -> Result<(), ProfileError> {
        let mut values: Vec<i64> = Vec::new();
        memory.reserve(&mut values, self.nodes.len())?;
        values.extend(self.nodes[1..].iter().map(|n| n.value));
        let middle = values.len() / 2;
        let threshold = values.select_nth_unstable(middle).1.to_owned();
        memory.free(values);
        self.prune(threshold);
        Ok(())
    }

    /// Drops every node whose value is at most `threshold` (with its subtree: children are
    /// never larger than their parent).
    fn prune(&mut self, threshold: i64) {
        let mut kept = 0u32;
        // Parents come before their children, so one forward pass renumbers.
        let mut map: Vec<u32> = Vec::with_capacity(self.nodes.len());
        for (i, node) in self.nodes.iter().enumerate() {
            let keep = i == 0 || (node.value > threshold && map[node.parent as usize] != u32::MAX);
            map.push(if keep { kept } else { u32::MAX });
            if keep {
                kept += 1;
            } else if i != 0 && node.parent == 0 {
                self.merged_at_root = self.merged_at_root.wrapping_add(node.value);
            }
        }
        let mut write = 0usize;
        for read in 0..self.nodes.len() {
            if map[read] == u32::MAX {
                continue;
            }
            let mut node = self.nodes[read];
            node.parent = map[node.parent as usize];
            self.nodes[write] = node;
            write += 1;
        }
        self.nodes.truncate(write);
        self.children.clear();
        for (i, node) in self.nodes.iter().enumerate().skip(1) {
            self.children.insert((node.parent, node.key), i as u32);
        }
        self.merged_below = self.merged_below.max(threshold);
    }

    /// The folded lines (`root;…;leaf self-value`), sorted, without frames too narrow to be
    /// drawn, within [`MAX_FOLDED_BYTES`]; and the value under which frames were merged
    /// into their callers (0 when none were).
    pub fn into_folded(mut self, index: &FrameIndex, memory: &mut Allowance) -> Result<Folded, ProfileError> {
        let total = self.nodes[0].value;
        let narrowest = (total as f64 * DRAWN_FRACTION) as i64;
        if self.nodes[1..].iter().any(|n| n.value <= narrowest) {
            let before = self.merged_below;
            self.prune(narrowest);
            // Frames inferno would not draw anyway are not a loss worth reporting.
            self.merged_below = before;
        }
        loop {
            let bytes = self.folded_bytes(index);
            if bytes <= MAX_FOLDED_BYTES || self.nodes.len() <= 1 {
                break;
            }
            self.prune_half(memory)?;
        }
        let bytes = self.folded_bytes(index);
        memory.charge(bytes as u64 + self.nodes.len() as u64 * INFERNO_BYTES_PER_NODE)?;
        let mut own = vec![0i64; self.nodes.len()];
        for (i, n) in self.nodes.iter().enumerate() {
            own[i] = own[i].wrapping_add(n.value);
            if i > 0 {
                own[n.parent as usize] = own[n.parent as usize].wrapping_sub(n.value);
            }
        }
        let mut text = String::with_capacity(bytes);
        if self.merged_at_root > 0 {
            text.push_str(&format!("{MERGED} {}\n", self.merged_at_root));
        }
        let mut path: Vec<u32> = Vec::new();
        for (i, value) in own.iter().enumerate().skip(1) {
            if *value <= 0 {
                continue;
            }
            path.clear();
            let mut at = i;
            while at != 0 {
                path.push(self.nodes[at].key);
                at = self.nodes[at].parent as usize;
            }
            for (depth, key) in path.iter().rev().enumerate() {
                if depth > 0 {
                    text.push(';');
                }
                // `;` separates frames in the folded format.
                text.extend(index.name(*key).chars().map(|c| if c == ';' { ':' } else { c }));
            }
            text.push(' ');
            text.push_str(&value.to_string());
            text.push('\n');
        }
        memory.release(self.charged);
        Ok(Folded { text, merged_below: self.merged_below })
    }

    /// The size of the folded text this tree gives.
    fn folded_bytes(&self, index: &FrameIndex) -> usize {
        let mut path_len = vec![0usize; self.nodes.len()];
        let mut children_value = vec![0i64; self.nodes.len()];
        for (i, n) in self.nodes.iter().enumerate().skip(1) {
            let parent = n.parent as usize;
            let separator = usize::from(parent != 0);
            path_len[i] = path_len[parent] + separator + index.name(n.key).len();
            children_value[parent] = children_value[parent].wrapping_add(n.value);
        }
        self.nodes
            .iter()
            .enumerate()
            .skip(1)
            .filter(|(i, n)| n.value.wrapping_sub(children_value[*i]) > 0)
            .map(|(i, _)| path_len[i] + 22)
            .sum::<usize>()
            + MERGED.len()
            + 22
    }
}

/// Folded stacks, one per line, ready for inferno.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Folded {
    /// `root;…;leaf value` lines.
    pub text: String,
    /// Frames whose value was at most this were merged into their callers to bound memory
    /// (0: none were).
    pub merged_below: i64,
}

impl Folded {
    /// The lines, sorted.
    pub fn lines(&self) -> Vec<&str> {
        let mut lines: Vec<&str> = self.text.lines().collect();
        lines.sort_unstable();
        lines
    }
}

/// Renders folded stacks as a flame graph SVG into `out`.
pub fn render_svg(title: &str, count_name: &str, folded: &Folded, out: impl std::io::Write) -> std::io::Result<()> {
    let mut options = inferno::flamegraph::Options::default();
    options.title = title.to_owned();
    options.count_name = count_name.to_owned();
    if folded.merged_below > 0 {
        options.subtitle =
            Some(format!("stacks of at most {} {count_name} are merged into their callers", folded.merged_below));
    }
    if folded.text.is_empty() {
        // inferno refuses empty input; an empty profile still gets a (blank) graph.
        options.subtitle = Some("no samples".to_owned());
        return inferno::flamegraph::from_lines(&mut options, ["all 1"], out);
    }
    inferno::flamegraph::from_lines(&mut options, folded.text.lines(), out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_an_svg_naming_the_functions() {
        let folded = Folded { text: "main;work;hash 600\nmain;idle 300\n".into(), merged_below: 0 };
        let mut svg = Vec::new();
        render_svg("cpu", "nanoseconds", &folded, &mut svg).unwrap();
        let text = String::from_utf8(svg).unwrap();
        assert!(text.starts_with("<?xml") && text.contains("<svg"));
        assert!(text.contains("hash") && text.contains("idle"));
    }
}
