//! `plot_model`: the model's architecture as a diagram, in Keras' style:
//! one box per layer with its name, class and input and output shapes,
//! arrows along the data flow. As Graphviz DOT text and as a self-drawn SVG
//! (no `dot` program needed).

use std::fmt::Write as _;
use std::path::Path;

use super::Sequential;
use crate::error::{Error, Result};
use crate::files::write_atomic;
use crate::shape::Shape;

/// One box of the diagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiagramNode {
    /// The layer's name (`dense_1`), `input_layer` for the input.
    pub name: String,
    /// The layer's class (`Dense`), `InputLayer` for the input.
    pub class: String,
    /// Input shape in Keras' notation, `(None, 784)`.
    pub input_shape: String,
    /// Output shape.
    pub output_shape: String,
}

/// A model's architecture as boxes and arrows (Keras `plot_model` with
/// `show_shapes=True`). Boxes are in data-flow order (inputs first); a
/// `Sequential` model's arrows go from each box to the next, a functional
/// model's follow its graph.
///
/// ```
/// use horn::prelude::*;
/// let model = Sequential::new().input(784).dense(512, Relu).dense(10, Softmax);
/// let d = model.plot_model().unwrap();
/// assert_eq!(d.nodes().len(), 3); // the input and two layers
/// assert!(d.to_dot().contains("\"dense\" -> \"dense_1\""));
/// assert!(d.to_svg().starts_with("<svg"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelDiagram {
    title: String,
    nodes: Vec<DiagramNode>,
    edges: Vec<(usize, usize)>,
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const BOX_H: f64 = 58.0;
const GAP: f64 = 34.0;
const CHAR_W: f64 = 7.2;

impl ModelDiagram {
    /// The boxes, input first.
    pub fn nodes(&self) -> &[DiagramNode] {
        &self.nodes
    }

    /// The arrows, as `(from, to)` indices into [`ModelDiagram::nodes`].
    pub fn edges(&self) -> Vec<(usize, usize)> {
        self.edges.clone()
    }

    /// A diagram from boxes and arrows (`from` before `to` in `nodes`).
    pub(crate) fn from_parts(
        title: String,
        nodes: Vec<DiagramNode>,
        edges: Vec<(usize, usize)>,
    ) -> Self {
        ModelDiagram {
            title,
            nodes,
            edges,
        }
    }

    /// Each box's row: 0 for boxes without arrows in, else one below the
    /// lowest box that points to it.
    fn levels(&self) -> Vec<usize> {
        let mut level = vec![0usize; self.nodes.len()];
        // Arrows point forward in `nodes`, so one pass in order settles them.
        let mut edges = self.edges.clone();
        edges.sort_by_key(|&(_, b)| b);
        for (a, b) in edges {
            if a < b && b < level.len() {
                level[b] = level[b].max(level[a] + 1);
            }
        }
        level
    }

    /// Graphviz DOT text (`dot -Tpng model.dot > model.png` draws it):
    /// record-shaped nodes named by layer, in Keras' layout.
    pub fn to_dot(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "digraph \"{}\" {{", self.title.replace('"', "'"));
        s.push_str("  rankdir=TB;\n  node [shape=record, fontname=\"Helvetica\", fontsize=11];\n");
        for n in &self.nodes {
            let label = format!(
                "{{{} ({})|{{Input shape: {}|Output shape: {}}}}}",
                n.name, n.class, n.input_shape, n.output_shape
            )
            .replace('"', "'");
            let _ = writeln!(s, "  \"{}\" [label=\"{label}\"];", n.name);
        }
        for (a, b) in self.edges() {
            let _ = writeln!(
                s,
                "  \"{}\" -> \"{}\";",
                self.nodes[a].name, self.nodes[b].name
            );
        }
        s.push_str("}\n");
        s
    }

    /// The diagram as SVG: a column of boxes (name and class on top, input
    /// and output shapes below) joined by arrows. Each box is a
    /// `<g class="layer" data-name=.. data-class=..>`, each arrow a
    /// `<line class="edge" data-from=.. data-to=..>`.
    pub fn to_svg(&self) -> String {
        let text_w = |n: &DiagramNode| {
            let top = n.name.len() + n.class.len() + 3;
            // "Input: ..   Output: .." on one line.
            let bottom = n.input_shape.len() + n.output_shape.len() + 18;
            top.max(bottom) as f64 * CHAR_W + 24.0
        };
        let box_w = self.nodes.iter().map(text_w).fold(220.0, f64::max);
        // Rows by level, boxes side by side in each row, rows centred.
        let level = self.levels();
        let rows = level.iter().max().map_or(0, |m| m + 1);
        let mut per_row = vec![0usize; rows];
        let mut slot = vec![0usize; self.nodes.len()];
        for (i, &l) in level.iter().enumerate() {
            slot[i] = per_row[l];
            per_row[l] += 1;
        }
        let widest = per_row.iter().copied().max().unwrap_or(1).max(1) as f64;
        let h_gap = 24.0;
        let width = widest * box_w + (widest - 1.0) * h_gap + 40.0;
        let height = 20.0 + rows as f64 * (BOX_H + GAP) - GAP + 20.0;
        let pos = |i: usize| -> (f64, f64) {
            let n = per_row[level[i]] as f64;
            let row_w = n * box_w + (n - 1.0) * h_gap;
            let x = (width - row_w) / 2.0 + slot[i] as f64 * (box_w + h_gap);
            (x, 20.0 + level[i] as f64 * (BOX_H + GAP))
        };
        let mut s = String::new();
        let _ = write!(
            s,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" height=\"{height:.0}\" \
             viewBox=\"0 0 {width:.0} {height:.0}\" font-family=\"Helvetica, Arial, sans-serif\" font-size=\"12\">\n\
             <title>{}</title>\n<defs><marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" \
             markerWidth=\"8\" markerHeight=\"8\" orient=\"auto\"><path d=\"M0,0 L10,5 L0,10 z\" fill=\"#444\"/></marker></defs>\n\
             <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n",
            escape(&self.title)
        );
        for (i, n) in self.nodes.iter().enumerate() {
            let (x0, y) = pos(i);
            let mid = y + BOX_H / 2.0;
            let _ = writeln!(
                s,
                "<g class=\"layer\" data-name=\"{}\" data-class=\"{}\">\
                 <rect x=\"{x0:.1}\" y=\"{y:.1}\" width=\"{box_w:.1}\" height=\"{BOX_H}\" rx=\"4\" fill=\"#f2f6fb\" stroke=\"#34495e\"/>\
                 <line x1=\"{x0:.1}\" y1=\"{mid:.1}\" x2=\"{:.1}\" y2=\"{mid:.1}\" stroke=\"#34495e\"/>\
                 <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-weight=\"bold\">{} ({})</text>\
                 <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">Input: {}   Output: {}</text></g>",
                escape(&n.name),
                escape(&n.class),
                x0 + box_w,
                x0 + box_w / 2.0,
                y + 19.0,
                escape(&n.name),
                escape(&n.class),
                x0 + box_w / 2.0,
                mid + 19.0,
                escape(&n.input_shape),
                escape(&n.output_shape),
            );
        }
        for &(a, b) in &self.edges {
            let (xa, ya) = pos(a);
            let (xb, yb) = pos(b);
            let (x1, y1) = (xa + box_w / 2.0, ya + BOX_H);
            let (x2, y2) = (xb + box_w / 2.0, yb - 2.0);
            let _ = writeln!(
                s,
                "<line class=\"edge\" data-from=\"{}\" data-to=\"{}\" x1=\"{x1:.1}\" y1=\"{y1:.1}\" x2=\"{x2:.1}\" y2=\"{y2:.1}\" stroke=\"#444\" stroke-width=\"1.5\" marker-end=\"url(#arrow)\"/>",
                escape(&self.nodes[a].name),
                escape(&self.nodes[b].name)
            );
        }
        s.push_str("</svg>\n");
        s
    }

    /// Writes [`ModelDiagram::to_svg`] to a file.
    pub fn write_svg(&self, path: impl AsRef<Path>) -> Result<()> {
        write_atomic(path.as_ref(), self.to_svg().as_bytes())
    }

    /// Writes [`ModelDiagram::to_dot`] to a file.
    pub fn write_dot(&self, path: impl AsRef<Path>) -> Result<()> {
        write_atomic(path.as_ref(), self.to_dot().as_bytes())
    }
}

impl Sequential {
    /// The model's diagram (Keras `keras.utils.plot_model(model,
    /// show_shapes=True)`): write it with
    /// [`ModelDiagram::write_svg`] or [`ModelDiagram::write_dot`]. The model
    /// must know its input shape.
    pub fn plot_model(&self) -> Result<ModelDiagram> {
        let Some(input) = self.get_input_shape() else {
            return Err(Error::NotBuilt(
                "plot_model needs the input shape: set `input`/`input_shape`, or fit once".into(),
            ));
        };
        let shapes: Vec<Shape> = self.all_shapes();
        let mut nodes = vec![DiagramNode {
            name: "input_layer".into(),
            class: "InputLayer".into(),
            input_shape: input.to_string(),
            output_shape: input.to_string(),
        }];
        for (i, (layer, name)) in self.layers().iter().zip(self.layer_names()).enumerate() {
            nodes.push(DiagramNode {
                name: name.to_string(),
                class: layer.class_name().to_string(),
                input_shape: shapes.get(i).map_or("?".into(), Shape::to_string),
                output_shape: shapes.get(i + 1).map_or("?".into(), Shape::to_string),
            });
        }
        let edges = (1..nodes.len()).map(|i| (i - 1, i)).collect();
        Ok(ModelDiagram {
            title: self.model_name().to_string(),
            nodes,
            edges,
        })
    }
}
