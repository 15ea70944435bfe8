//! Flame graph SVGs (inferno) from folded stacks.

/// Renders folded stacks as a flame graph SVG.
pub fn render_svg(title: &str, count_name: &str, folded: &[String]) -> Result<Vec<u8>, String> {
    let mut options = inferno::flamegraph::Options::default();
    options.title = title.to_owned();
    options.count_name = count_name.to_owned();
    let mut svg = Vec::new();
    if folded.is_empty() {
        // inferno refuses empty input; an empty profile still gets a (blank) graph.
        options.subtitle = Some("no samples".to_owned());
        inferno::flamegraph::from_lines(&mut options, ["all 1"], &mut svg).map_err(|e| e.to_string())?;
    } else {
        inferno::flamegraph::from_lines(&mut options, folded.iter().map(String::as_str), &mut svg)
            .map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_an_svg_naming_the_functions() {
        let svg = render_svg("cpu", "nanoseconds", &["main;work;hash 600".into(), "main;idle 300".into()]).unwrap();
        let text = String::from_utf8(svg).unwrap();
        assert!(text.starts_with("<?xml") && text.contains("<svg"));
        assert!(text.contains("hash") && text.contains("idle"));
    }
}
