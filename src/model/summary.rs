//! Keras 3's `summary()` table (`keras/src/utils/summary_utils.py`).

use super::Sequential;

const COLS: [usize; 3] = [33, 24, 15];

/// `1234567` -> `1,234,567`.
pub(crate) fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// Keras' `readable_memory_size`: 1024-based units, two decimals.
pub(crate) fn memory(bytes: f64) -> String {
    let units = ["B", "KB", "MB", "GB", "TB"];
    let mut v = bytes;
    let mut i = 0;
    while v >= 1024.0 && i < units.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    format!("{v:.2} {}", units[i])
}

fn rule(left: char, mid: char, right: char, fill: char) -> String {
    let mut s = String::new();
    s.push(left);
    for (i, w) in COLS.iter().enumerate() {
        s.push_str(&fill.to_string().repeat(*w));
        s.push(if i + 1 < COLS.len() { mid } else { right });
    }
    s
}

fn row(sep: char, cells: [&str; 3]) -> String {
    let mut s = String::new();
    s.push(sep);
    for (i, (w, c)) in COLS.iter().zip(cells).enumerate() {
        let inner = w - 2;
        let mut c = c.to_string();
        if c.chars().count() > inner {
            c = c.chars().take(inner - 1).collect::<String>() + "…";
        }
        if i == 2 {
            s.push_str(&format!(" {c:>inner$} "));
        } else {
            s.push_str(&format!(" {c:<inner$} "));
        }
        s.push(sep);
    }
    s
}

impl Sequential {
    /// The Keras 3 summary table: name, `Layer (type)`, `Output Shape` as
    /// `(None, 512)`, `Param #` with thousands separators, and the totals with
    /// their memory size (4 bytes per f32 weight).
    ///
    /// ```
    /// use horn::prelude::*;
    /// let model = Sequential::new().input(784).dense(512, Relu).dense(10, Softmax);
    /// let s = model.summary();
    /// assert!(s.contains("dense (Dense)"));
    /// assert!(s.contains("401,920"));
    /// assert!(s.contains("Total params: 407,050 (1.55 MB)"));
    /// ```
    pub fn summary(&self) -> String {
        let mut out = format!("Model: \"{}\"\n", self.model_name());
        out.push_str(&rule('┏', '┳', '┓', '━'));
        out.push('\n');
        let head = row('┃', ["Layer (type)", "Output Shape", "Param #"]);
        out.push_str(&head);
        out.push('\n');
        out.push_str(&rule('┡', '╇', '┩', '━'));
        out.push('\n');
        let shapes = self.layer_shapes();
        let n = self.layers().len();
        let (mut total, mut frozen) = (0usize, 0usize);
        for (i, (layer, name)) in self.layers().iter().zip(self.layer_names()).enumerate() {
            let shape = shapes.get(i).map_or("?".to_string(), |s| s.to_string());
            let params = layer.params();
            let count: usize = params.iter().map(|p| p.values.len()).sum();
            total += count;
            frozen += params
                .iter()
                .filter(|p| !p.trainable)
                .map(|p| p.values.len())
                .sum::<usize>();
            let label = format!("{name} ({})", layer.class_name());
            let count = if shapes.get(i).is_some() {
                thousands(count)
            } else {
                "0 (unbuilt)".to_string()
            };
            out.push_str(&row('│', [&label, &shape, &count]));
            out.push('\n');
            if i + 1 < n {
                out.push_str(&rule('├', '┼', '┤', '─'));
                out.push('\n');
            }
        }
        out.push_str(&rule('└', '┴', '┘', '─'));
        out.push('\n');
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
        if let Some(opt) = self.optimizer() {
            let slots: usize = opt.slots().map(|(_, s)| s.len()).sum();
            if slots > 0 || opt.iterations() > 0 {
                out.push_str(&format!(
                    " Optimizer params: {} ({})\n",
                    thousands(slots + 1),
                    memory((slots + 1) as f64 * 4.0)
                ));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separators_and_memory() {
        assert_eq!(thousands(235146), "235,146");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(memory(235146.0 * 4.0), "918.54 KB");
        assert_eq!(memory(0.0), "0.00 B");
    }
}
