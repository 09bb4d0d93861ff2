//! Everything from the data (texts, labels, model names, answers) reaches the page through
//! these functions: as escaped text, or as JSON that cannot end its script element.

/// Text or attribute value: the five HTML-special characters as entities.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(ch),
        }
    }
    out
}

/// JSON for a `<script type="application/json">` block: `<`, `>` and `&` as `\u` escapes
/// (so no `</script>` or `<!--` can appear), and the JavaScript line separators too. The
/// result parses back to the same value.
pub fn script_json(v: &serde_json::Value) -> String {
    let text = serde_json::to_string(v).unwrap_or_else(|_| "null".into());
    let mut out = String::with_capacity(text.len() + 16);
    for ch in text.chars() {
        match ch {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            _ => out.push(ch),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_become_text() {
        let p = r#"</script><script>alert(1)</script><img src=x onerror="a('1')">{{x}}${y}"#;
        let e = esc(p);
        assert!(!e.contains('<') && !e.contains('>') && !e.contains('"') && !e.contains('\''));
        assert!(e.contains("{{x}}${y}"));
    }

    #[test]
    fn script_json_cannot_close_its_element_and_reads_back() {
        let v = serde_json::json!({"t": "</script><!-- & \u{2028}", "</SCRIPT>": 1});
        let s = script_json(&v);
        assert!(!s.to_ascii_lowercase().contains("</script"));
        assert!(!s.contains("<!--") && !s.contains('\u{2028}'));
        let back: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(back, v);
    }
}
