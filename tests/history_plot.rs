//! History output: CSV, JSON and the plot (SVG and PNG).

mod common;

use horn::prelude::*;

fn history() -> History {
    let (x, y) = common::blobs(120, 6, 3);
    let mut m = Sequential::new()
        .seed(2)
        .input(6)
        .dense(16, Relu)
        .dense(3, Softmax);
    m.compile("adam", "categorical_crossentropy", &["accuracy"])
        .unwrap();
    m.fit(
        &x,
        &y,
        FitOptions {
            epochs: 6,
            batch_size: 16,
            validation_split: 0.25,
            verbose: 0,
            ..Default::default()
        },
    )
    .unwrap()
}

#[test]
fn svg_has_one_panel_per_metric_and_both_splits() {
    let h = history();
    let svg = h.to_svg();
    let doc = roxmltree::Document::parse(&svg).expect("well-formed SVG");
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "svg");
    let panels: Vec<_> = root
        .descendants()
        .filter(|n| n.attribute("class") == Some("panel"))
        .collect();
    let names: Vec<&str> = panels
        .iter()
        .map(|p| p.attribute("data-metric").unwrap())
        .collect();
    assert_eq!(names, ["loss", "accuracy"]);
    for panel in &panels {
        let series: Vec<_> = panel
            .descendants()
            .filter(|n| n.attribute("class") == Some("series"))
            .collect();
        let splits: Vec<&str> = series
            .iter()
            .map(|s| s.attribute("data-split").unwrap())
            .collect();
        assert_eq!(splits, ["training", "validation"]);
        for s in &series {
            // One point per epoch, inside the panel's rectangle.
            let pts: Vec<(f64, f64)> = s
                .attribute("points")
                .unwrap()
                .split(' ')
                .map(|p| {
                    let (a, b) = p.split_once(',').unwrap();
                    (a.parse().unwrap(), b.parse().unwrap())
                })
                .collect();
            assert_eq!(pts.len(), 6);
            let rect = panel
                .children()
                .find(|n| n.tag_name().name() == "rect")
                .unwrap();
            let num = |k: &str| rect.attribute(k).unwrap().parse::<f64>().unwrap();
            let (x0, y0, w, hgt) = (num("x"), num("y"), num("width"), num("height"));
            assert!(pts
                .iter()
                .all(|&(x, y)| x >= x0 - 1e-6 && x <= x0 + w + 1e-6 && y >= y0 && y <= y0 + hgt));
            // x increases with the epoch: the first epoch near the left edge and
            // the last near the right, each inside the panel (not on its border).
            assert!(pts[0].0 > x0 + 1.0 && pts[0].0 < x0 + 0.1 * w, "{pts:?}");
            assert!(
                pts[5].0 < x0 + w - 1.0 && pts[5].0 > x0 + 0.9 * w,
                "{pts:?}"
            );
            assert!(pts.windows(2).all(|p| p[0].0 < p[1].0));
        }
        // Sensible axes: y tick labels are numbers in increasing order, x ticks are epochs 1..=6.
        let yt: Vec<f64> = panel
            .descendants()
            .filter(|n| n.attribute("class") == Some("ytick"))
            .map(|n| n.next_sibling().unwrap().text().unwrap().parse().unwrap())
            .collect();
        assert!(
            yt.len() >= 3 && yt.windows(2).all(|w| w[0] < w[1]),
            "{yt:?}"
        );
        let xt: Vec<f64> = panel
            .descendants()
            .filter(|n| n.attribute("class") == Some("xtick"))
            .map(|n| n.next_sibling().unwrap().text().unwrap().parse().unwrap())
            .collect();
        assert!(
            xt.iter()
                .all(|&e| (1.0..=6.0).contains(&e) && e.fract() == 0.0)
                && xt.len() >= 3,
            "{xt:?}"
        );
    }
    // The loss panel's y range covers the recorded losses.
    let loss = h.get("loss").unwrap();
    let yt: Vec<f64> = panels[0]
        .descendants()
        .filter(|n| n.attribute("class") == Some("ytick"))
        .map(|n| n.next_sibling().unwrap().text().unwrap().parse().unwrap())
        .collect();
    let (lo, hi) = loss
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    assert!(yt[0] <= hi as f64 && *yt.last().unwrap() >= lo as f64);
}

#[test]
fn csv_and_json_hold_every_epoch() {
    let h = history();
    let csv = h.to_csv();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "epoch,loss,accuracy,val_loss,val_accuracy");
    assert_eq!(lines.len(), 7);
    let json: serde_json::Value = serde_json::from_str(&h.to_json()).unwrap();
    assert_eq!(json["history"]["val_loss"].as_array().unwrap().len(), 6);
    assert_eq!(json["params"]["epochs"], 6);
    assert_eq!(json["epoch"][5], 5);
    let path = std::env::temp_dir().join(format!("horn-history-{}.svg", std::process::id()));
    h.write_svg(&path).unwrap();
    assert!(std::fs::read_to_string(&path).unwrap().starts_with("<svg"));
}

#[test]
fn one_legend_and_readable_large_values() {
    let mut h = History::default();
    for e in 0..4 {
        let mut logs = horn::Logs::default();
        logs.insert("loss", 18_000_000.0 / (e + 1) as f32);
        logs.insert("mae", 0.5);
        logs.insert("val_loss", 20_000_000.0 / (e + 1) as f32);
        logs.insert("val_mae", 0.6);
        h.push(e, &logs);
    }
    let svg = h.to_svg();
    let doc = roxmltree::Document::parse(&svg).unwrap();
    let legend_entries = doc
        .descendants()
        .filter(|n| n.is_element() && n.text() == Some("validation"))
        .count();
    assert_eq!(legend_entries, 1, "the legend is drawn once");
    let labels: Vec<&str> = doc
        .descendants()
        .filter(|n| n.attribute("class") == Some("ytick"))
        .filter_map(|n| n.next_sibling().and_then(|t| t.text()))
        .collect();
    assert!(labels.iter().any(|l| l.contains("e7")), "{labels:?}");
    assert!(labels.iter().all(|l| l.len() <= 6), "{labels:?}");
}

/// The PNG is the same picture as the SVG: its size, the panels' grey, both
/// series' colours in each panel, and a valid PNG file.
#[test]
fn png_draws_the_same_picture() {
    let h = history();
    let img = h.to_image().unwrap();
    let svg = h.to_svg();
    let doc = roxmltree::Document::parse(&svg).unwrap();
    let root = doc.root_element();
    let size = |k: &str| root.attribute(k).unwrap().parse::<f64>().unwrap() as usize;
    assert_eq!((img.width(), img.height()), (size("width"), size("height")));
    // Each panel's rectangle holds both series' colours.
    for panel in doc
        .descendants()
        .filter(|n| n.attribute("class") == Some("panel"))
    {
        let rect = panel.children().find(|c| c.has_tag_name("rect")).unwrap();
        let num = |k: &str| rect.attribute(k).unwrap().parse::<f64>().unwrap() as usize;
        let (x, y, w, hh) = (num("x"), num("y"), num("width"), num("height"));
        let count = |c: [u8; 3]| {
            (y..y + hh)
                .flat_map(|py| (x..x + w).map(move |px| (px, py)))
                .filter(|&(px, py)| img.pixel(px, py) == Some(c))
                .count()
        };
        assert!(count([0xEB, 0xEB, 0xEB]) > w * hh / 2, "panel grey");
        assert!(count([0xF8, 0x76, 0x6D]) > 50, "training series");
        assert!(count([0x00, 0xBF, 0xC4]) > 50, "validation series");
    }
    let path = std::env::temp_dir().join(format!("horn-history-{}.png", std::process::id()));
    h.write_png(&path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    assert_eq!(
        u32::from_be_bytes(bytes[16..20].try_into().unwrap()) as usize,
        img.width()
    );
}
