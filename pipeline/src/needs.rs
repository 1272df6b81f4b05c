//! The `needs` graph: dependency cycles (which the reference does not detect), the topological
//! order, and the dependency closure of one action. All walks are iterative, so a long chain of
//! actions cannot overflow the stack.

use std::collections::HashMap;

use crate::model::{Action, RUN_ALL_COMMAND};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mark {
    New,
    OnPath,
    Done,
}

/// Depth-first walk from `start`, dependencies in `needs` order. Calls `on_finish` for each node
/// once all its dependencies are finished; returns the cycle as names (`[a, b, a]`) when a
/// dependency leads back to a node still on the path.
fn walk(
    actions: &[Action],
    index: &HashMap<String, usize>,
    start: usize,
    marks: &mut [Mark],
    on_finish: &mut dyn FnMut(usize),
) -> Result<(), Vec<String>> {
    if marks[start] != Mark::New {
        return Ok(());
    }
    // Each frame: the action, and how many of its needs have been looked at.
    let mut path: Vec<(usize, usize)> = vec![(start, 0)];
    marks[start] = Mark::OnPath;
    while let Some(frame) = path.last_mut() {
        let (node, next) = *frame;
        let needs = &actions[node].needs;
        if next < needs.len() {
            frame.1 += 1;
            let target = needs[next].as_str();
            // Unknown targets were rejected before the graph is built; skip one defensively.
            let Some(&dependency) = index.get(target) else {
                continue;
            };
            match marks[dependency] {
                Mark::Done => {}
                Mark::New => {
                    marks[dependency] = Mark::OnPath;
                    path.push((dependency, 0));
                }
                Mark::OnPath => {
                    let from = path.iter().position(|(n, _)| *n == dependency).unwrap_or(0);
                    let mut cycle: Vec<String> = path[from..]
                        .iter()
                        .map(|(n, _)| actions[*n].name.clone())
                        .collect();
                    cycle.push(actions[dependency].name.clone());
                    return Err(cycle);
                }
            }
        } else {
            marks[node] = Mark::Done;
            on_finish(node);
            path.pop();
        }
    }
    Ok(())
}

/// The first dependency cycle, walking actions in file order, as `[a, b, a]`.
pub(crate) fn find_cycle(
    actions: &[Action],
    index: &HashMap<String, usize>,
) -> Option<Vec<String>> {
    let mut marks = vec![Mark::New; actions.len()];
    for start in 0..actions.len() {
        if let Err(cycle) = walk(actions, index, start, &mut marks, &mut |_| {}) {
            return Some(cycle);
        }
    }
    None
}

/// Every action, dependencies first, independent actions in file order. A user-defined `run_all`
/// is only included when some action needs it. Call only on an acyclic graph.
pub(crate) fn topological(actions: &[Action], index: &HashMap<String, usize>) -> Vec<usize> {
    let mut marks = vec![Mark::New; actions.len()];
    let mut order = Vec::with_capacity(actions.len());
    for start in 0..actions.len() {
        if actions[start].name == RUN_ALL_COMMAND {
            continue;
        }
        // The graph is acyclic (checked at load), so the walk cannot fail.
        let _ = walk(actions, index, start, &mut marks, &mut |node| {
            order.push(node)
        });
    }
    order
}

/// `start` and everything it needs, directly or not, dependencies first.
pub(crate) fn closure(
    actions: &[Action],
    index: &HashMap<String, usize>,
    start: usize,
) -> Vec<usize> {
    let mut marks = vec![Mark::New; actions.len()];
    let mut order = Vec::new();
    let _ = walk(actions, index, start, &mut marks, &mut |node| {
        order.push(node)
    });
    order
}
