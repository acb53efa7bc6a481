//! Keras 3's functional `summary()`: the Sequential table plus a
//! "Connected to" column (`dense[0][0]`: layer, call, output).

use super::graph::LayerKind;
use super::Model;
use crate::model::summary::{memory, thousands};

/// The widest each column's text may grow before it wraps.
const MAX_WIDTHS: [usize; 4] = [30, 24, 11, 26];
const HEADER: [&str; 4] = ["Layer (type)", "Output Shape", "Param #", "Connected to"];

/// Splits `text` into lines of at most `width` characters at spaces (a
/// word longer than the width gets a line of its own).
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for word in text.split(' ') {
        match lines.last_mut() {
            Some(l) if l.chars().count() + 1 + word.chars().count() <= width => {
                l.push(' ');
                l.push_str(word);
            }
            _ => lines.push(word.to_string()),
        }
    }
    lines
}

fn rule(widths: &[usize; 4], left: char, mid: char, right: char, fill: char) -> String {
    let mut s = String::new();
    s.push(left);
    for (i, w) in widths.iter().enumerate() {
        s.push_str(&fill.to_string().repeat(w + 2));
        s.push(if i + 1 < widths.len() { mid } else { right });
    }
    s.push('\n');
    s
}

fn rows(widths: &[usize; 4], sep: char, cells: &[Vec<String>; 4]) -> String {
    let height = cells.iter().map(Vec::len).max().unwrap_or(1);
    let mut s = String::new();
    for line in 0..height {
        s.push(sep);
        for (i, (w, cell)) in widths.iter().zip(cells).enumerate() {
            let text = cell.get(line).map_or("", String::as_str);
            if i == 2 {
                s.push_str(&format!(" {text:>w$} "));
            } else {
                s.push_str(&format!(" {text:<w$} "));
            }
            s.push(sep);
        }
        s.push('\n');
    }
    s
}

impl Model {
    /// The Keras 3 summary table of a functional model: one row per input
    /// and per layer, with `Layer (type)`, `Output Shape`, `Param #` and
    /// `Connected to` (the tensors each call reads, as
    /// `layer[call][0]`), then the totals.
    ///
    /// ```
    /// use horn::prelude::*;
    /// let mut g = Graph::with_seed(1);
    /// let a = g.input("a", &[5]);
    /// let b = g.input("b", &[5]);
    /// let da = g.call_named("da", Dense::new(4, Relu), a);
    /// let db = g.call_named("db", Dense::new(4, Relu), b);
    /// let m = g.call(Concatenate::new(), [da, db]);
    /// let out = g.call_named("out", Dense::new(1, Linear), m);
    /// let model = Model::new(g, [a, b], [out]).unwrap();
    /// let s = model.summary();
    /// assert!(s.contains("a (InputLayer)"));
    /// assert!(s.contains("da[0][0]"));
    /// assert!(s.contains("Total params: 57"));
    /// ```
    pub fn summary(&self) -> String {
        let n_in = self.inputs.len();
        // The call index of each node among its layer's calls.
        let mut calls = vec![0usize; self.layers.len()];
        let mut call_of = Vec::with_capacity(self.nodes.len());
        for node in &self.nodes {
            call_of.push(calls[node.layer]);
            calls[node.layer] += 1;
        }
        let tensor_ref = |t: usize| -> String {
            if t < n_in {
                format!("{}[0][0]", self.inputs[t].0)
            } else {
                let k = t - n_in;
                format!(
                    "{}[{}][0]",
                    self.layers[self.nodes[k].layer].name, call_of[k]
                )
            }
        };
        let mut table: Vec<[String; 4]> = Vec::new();
        for (name, shape) in &self.inputs {
            table.push([
                format!("{name} (InputLayer)"),
                shape.to_string(),
                "0".into(),
                "-".into(),
            ]);
        }
        let (mut total, mut frozen) = (0usize, 0usize);
        for (l, layer) in self.layers.iter().enumerate() {
            let count = match &layer.kind {
                LayerKind::Layer(b) => {
                    let params = b.params();
                    frozen += params
                        .iter()
                        .filter(|p| !p.trainable)
                        .map(|p| p.values.len())
                        .sum::<usize>();
                    params.iter().map(|p| p.values.len()).sum::<usize>()
                }
                LayerKind::Merge(_) => 0,
            };
            total += count;
            let nodes: Vec<usize> = (0..self.nodes.len())
                .filter(|&k| self.nodes[k].layer == l)
                .collect();
            let shape = nodes.first().map_or("?".to_string(), |&k| {
                self.shapes[self.nodes[k].output].to_string()
            });
            let links: Vec<String> = nodes
                .iter()
                .flat_map(|&k| self.nodes[k].inputs.iter().map(|&t| tensor_ref(t)))
                .collect();
            table.push([
                format!("{} ({})", layer.name, layer.kind.class_name()),
                shape,
                thousands(count),
                links.join(", "),
            ]);
        }
        // Column widths: the longest word or line, within the caps.
        let mut widths = [0usize; 4];
        for (i, w) in widths.iter_mut().enumerate() {
            let longest_word = table
                .iter()
                .flat_map(|r| {
                    r[i].split(' ')
                        .map(|s| s.chars().count())
                        .collect::<Vec<_>>()
                })
                .max()
                .unwrap_or(0);
            let longest = table
                .iter()
                .map(|r| r[i].chars().count())
                .max()
                .unwrap_or(0);
            *w = HEADER[i]
                .len()
                .max(longest.min(MAX_WIDTHS[i]))
                .max(longest_word);
        }
        let mut out = format!("Model: \"{}\"\n", self.name);
        out.push_str(&rule(&widths, '┏', '┳', '┓', '━'));
        out.push_str(&rows(&widths, '┃', &HEADER.map(|h| vec![h.to_string()])));
        out.push_str(&rule(&widths, '┡', '╇', '┩', '━'));
        for (r, cells) in table.iter().enumerate() {
            let wrapped = [
                wrap(&cells[0], widths[0]),
                wrap(&cells[1], widths[1]),
                vec![cells[2].clone()],
                wrap(&cells[3], widths[3]),
            ];
            out.push_str(&rows(&widths, '│', &wrapped));
            if r + 1 < table.len() {
                out.push_str(&rule(&widths, '├', '┼', '┤', '─'));
            }
        }
        out.push_str(&rule(&widths, '└', '┴', '┘', '─'));
        let mem = |v: usize| memory(v as f64 * 4.0);
        out.push_str(&format!(
            " Total params: {} ({})\n",
            thousands(total),
            mem(total)
        ));
        out.push_str(&format!(
            " Trainable params: {} ({})\n",
            thousands(total - frozen),
            mem(total - frozen)
        ));
        out.push_str(&format!(
            " Non-trainable params: {} ({})\n",
            thousands(frozen),
            mem(frozen)
        ));
        out
    }
}

impl Model {
    /// The model's diagram (Keras `keras.utils.plot_model(model,
    /// show_shapes=True)`): a box per input and per layer, arrows along the
    /// graph, rows by depth. Write it with
    /// [`ModelDiagram::write_svg`](crate::model::ModelDiagram::write_svg) or
    /// `write_dot`.
    ///
    /// ```
    /// use horn::prelude::*;
    /// let mut g = Graph::with_seed(1);
    /// let a = g.input("a", &[4]);
    /// let b = g.input("b", &[4]);
    /// let s = g.call(Add::new(), [a, b]);
    /// let o = g.call(Dense::new(1, Linear), s);
    /// let model = Model::new(g, [a, b], [o]).unwrap();
    /// let d = model.plot_model();
    /// assert_eq!(d.nodes().len(), 4);
    /// assert_eq!(d.edges(), [(0, 2), (1, 2), (2, 3)]);
    /// assert!(d.to_dot().contains("\"b\" -> \"add\""));
    /// ```
    pub fn plot_model(&self) -> crate::model::ModelDiagram {
        use crate::model::DiagramNode;
        let n_in = self.inputs.len();
        let mut nodes: Vec<DiagramNode> = self
            .inputs
            .iter()
            .map(|(name, shape)| DiagramNode {
                name: name.clone(),
                class: "InputLayer".into(),
                input_shape: shape.to_string(),
                output_shape: shape.to_string(),
            })
            .collect();
        let mut edges = Vec::new();
        for (l, layer) in self.layers.iter().enumerate() {
            let calls: Vec<&super::Node> = self.nodes.iter().filter(|n| n.layer == l).collect();
            let Some(first) = calls.first() else {
                continue;
            };
            let ins: Vec<String> = first
                .inputs
                .iter()
                .map(|&t| self.shapes[t].to_string())
                .collect();
            let input_shape = if ins.len() == 1 {
                ins[0].clone()
            } else {
                format!("[{}]", ins.join(", "))
            };
            let box_index = nodes.len();
            nodes.push(DiagramNode {
                name: layer.name.clone(),
                class: layer.kind.class_name().to_string(),
                input_shape,
                output_shape: self.shapes[first.output].to_string(),
            });
            for call in calls {
                for &t in &call.inputs {
                    // The box of the input or of the layer that made `t`.
                    let from = if t < n_in {
                        t
                    } else {
                        n_in + self.nodes[t - n_in].layer
                    };
                    // A layer called on its own output draws no loop.
                    if from != box_index && !edges.contains(&(from, box_index)) {
                        edges.push((from, box_index));
                    }
                }
            }
        }
        crate::model::ModelDiagram::from_parts(self.name.clone(), nodes, edges)
    }
}
