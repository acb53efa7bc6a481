//! Pictures through the public API, checked by their structure: PNG files
//! decoded (chunks, CRCs, size, pixels), model diagrams parsed (SVG) or
//! scanned (DOT) for every layer and arrow, terminal renderings counted.

use horn::pictures::{Image, ImageGrid};
use horn::prelude::*;
use std::io::Read;

/// A decoded 8-bit RGB PNG: `(width, height, rgb)`, every chunk's CRC checked.
fn decode_png(bytes: &[u8]) -> (usize, usize, Vec<u8>) {
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    let (mut at, mut size, mut idat) = (8, (0, 0), Vec::new());
    loop {
        let len = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        let kind = &bytes[at + 4..at + 8];
        let data = &bytes[at + 8..at + 8 + len];
        let crc = u32::from_be_bytes(bytes[at + 8 + len..at + 12 + len].try_into().unwrap());
        let mut c = flate2::Crc::new();
        c.update(kind);
        c.update(data);
        assert_eq!(c.sum(), crc, "CRC of {}", String::from_utf8_lossy(kind));
        match kind {
            b"IHDR" => {
                size = (
                    u32::from_be_bytes(data[0..4].try_into().unwrap()) as usize,
                    u32::from_be_bytes(data[4..8].try_into().unwrap()) as usize,
                );
                assert_eq!(&data[8..10], &[8, 2], "8-bit RGB");
            }
            b"IDAT" => idat.extend_from_slice(data),
            b"IEND" => break,
            _ => {}
        }
        at += 12 + len;
    }
    let mut raw = Vec::new();
    flate2::read::ZlibDecoder::new(&idat[..])
        .read_to_end(&mut raw)
        .unwrap();
    let (w, h) = size;
    assert_eq!(raw.len(), (w * 3 + 1) * h);
    let rgb: Vec<u8> = raw
        .chunks(w * 3 + 1)
        .flat_map(|row| {
            assert_eq!(row[0], 0, "filter none");
            row[1..].to_vec()
        })
        .collect();
    (w, h, rgb)
}

fn digits(n: usize) -> ndarray::Array3<f32> {
    ndarray::Array3::from_shape_fn((n, 28, 28), |(i, r, c)| {
        let (dr, dc) = (r as f32 - 14.0, c as f32 - 14.0);
        let ring = (dr * dr + dc * dc).sqrt();
        ((ring - 6.0 - i as f32).abs() < 2.0) as u8 as f32
    })
}

#[test]
fn a_digit_grid_is_a_png_with_labels_in_colour() {
    let imgs = digits(5);
    let grid = ImageGrid::new(imgs.view())
        .labels(&[1, 2, 3, 4, 5])
        .predicted(&[1, 2, 9, 4, 5])
        .columns(3)
        .scale(2)
        .render()
        .unwrap();
    let path = std::env::temp_dir().join(format!("horn-grid-{}.png", std::process::id()));
    grid.save_png(&path).unwrap();
    let (w, h, rgb) = decode_png(&std::fs::read(&path).unwrap());
    assert_eq!((w, h), (grid.width(), grid.height()));
    assert_eq!(w, 3 * (56 + 8) + 8);
    let px = |x: usize, y: usize| {
        [
            rgb[(y * w + x) * 3],
            rgb[(y * w + x) * 3 + 1],
            rgb[(y * w + x) * 3 + 2],
        ]
    };
    // White margins, black and white digit pixels, green right and red wrong labels.
    assert_eq!(px(0, 0), [255, 255, 255]);
    let colours: std::collections::HashSet<[u8; 3]> =
        rgb.chunks(3).map(|p| [p[0], p[1], p[2]]).collect();
    for want in [[0, 0, 0], [255, 255, 255], [0, 140, 0], [220, 0, 0]] {
        assert!(colours.contains(&want), "{want:?} missing");
    }
    // The ring of the first digit is drawn: its centre row crosses white.
    let row: Vec<[u8; 3]> = (8..64).map(|x| px(x, 8 + 28)).collect();
    assert!(row.contains(&[255, 255, 255]) && row.contains(&[0, 0, 0]));
    // Mismatched labels are an error.
    assert!(ImageGrid::new(imgs.view())
        .labels(&[1, 2])
        .render()
        .is_err());
}

#[test]
fn images_from_tensors_of_each_layout() {
    let grey = digits(1).index_axis_move(ndarray::Axis(0), 0);
    let a = Image::from_array(&grey).unwrap();
    let b = Image::from_array(&grey.clone().insert_axis(ndarray::Axis(2))).unwrap();
    assert_eq!(a, b);
    let rgb = ndarray::Array3::<f32>::from_shape_fn((4, 5, 3), |(_, _, c)| (c == 0) as u8 as f32);
    let img = Image::from_array(&rgb).unwrap();
    assert_eq!(img.pixel(2, 1), Some([255, 0, 0]));
    let t = img.to_terminal();
    assert_eq!(t.lines().count(), 2);
    assert_eq!(t.matches('\u{2580}').count(), 2 * 5);
    assert!(Image::from_array(&ndarray::Array1::<f32>::zeros(4)).is_err());
}

#[test]
fn model_diagrams_show_every_layer_and_arrow() {
    let model = Sequential::new()
        .input_shape(&[28, 28, 1])
        .conv2d(8, 3, Relu)
        .max_pooling2d(2)
        .flatten()
        .dense(10, Softmax);
    let d = model.plot_model().unwrap();
    let svg = d.to_svg();
    let doc = roxmltree::Document::parse(&svg).unwrap();
    let boxes: Vec<(String, String)> = doc
        .descendants()
        .filter(|n| n.attribute("class") == Some("layer"))
        .map(|n| {
            (
                n.attribute("data-name").unwrap().into(),
                n.attribute("data-class").unwrap().into(),
            )
        })
        .collect();
    let want: Vec<(String, String)> = [
        ("input_layer", "InputLayer"),
        ("conv2d", "Conv2D"),
        ("max_pooling2d", "MaxPooling2D"),
        ("flatten", "Flatten"),
        ("dense", "Dense"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(boxes, want);
    let edges = doc
        .descendants()
        .filter(|n| n.attribute("class") == Some("edge"))
        .count();
    assert_eq!(edges, 4);
    assert!(svg.contains("(None, 26, 26, 8)") && svg.contains("(None, 10)"));
    let dot = d.to_dot();
    for (a, b) in d.edges() {
        let (a, b) = (&d.nodes()[a].name, &d.nodes()[b].name);
        assert!(
            dot.contains(&format!("\"{a}\" -> \"{b}\"")),
            "{a} -> {b} in {dot}"
        );
    }
    assert!(dot.starts_with("digraph") && dot.trim_end().ends_with('}'));
    // A model without an input shape cannot be drawn yet.
    assert!(Sequential::new().dense(2, Linear).plot_model().is_err());
}

#[test]
fn a_confusion_matrix_draws_its_counts() {
    let cm = confusion_matrix(&[0, 0, 1, 1, 2, 2, 2], &[0, 1, 1, 1, 2, 0, 2], None).unwrap();
    let img = cm.to_image().unwrap();
    let (w, h, rgb) = decode_png(&img.to_png().unwrap());
    assert_eq!((w, h), (img.width(), img.height()));
    // The full cell (class 1: 2 of 2) is the darkest blue.
    assert!(rgb.chunks(3).any(|p| p == [8, 48, 107]));
}
