//! Splitting long answers into messages WeChat accepts: each part under
//! 2,048 bytes of UTF-8, cut at a sentence end where possible, else at a
//! line or word break, else between characters (never inside one).

/// WeChat's limit is 2,048 bytes; stay strictly under it.
pub const MAX_PART_BYTES: usize = 2047;

/// Sentence ends, Chinese and Latin, after which a cut reads naturally.
const SENTENCE_ENDS: &[char] = &['。', '！', '？', '；', '…', '.', '!', '?', ';', '\n'];

/// Splits `text` into parts of at most `max` bytes each, in order.
pub fn split(text: &str, max: usize) -> Vec<String> {
    let mut parts = Vec::new();
    let mut rest = text.trim();
    while rest.len() > max {
        let window = floor_char_boundary(rest, max);
        let head = &rest[..window];
        // Prefer the last sentence end in the second half of the window,
        // so parts do not become tiny.
        let min_cut = window / 2;
        let cut = last_cut(head, SENTENCE_ENDS, min_cut)
            .or_else(|| last_cut(head, &[' ', '，', ','], min_cut))
            .unwrap_or(window);
        parts.push(rest[..cut].trim_end().to_owned());
        rest = rest[cut..].trim_start();
    }
    if !rest.is_empty() {
        parts.push(rest.to_owned());
    }
    parts
}

/// The byte offset just after the last `ends` char at or after `min`.
fn last_cut(head: &str, ends: &[char], min: usize) -> Option<usize> {
    head.char_indices()
        .rev()
        .find(|(i, c)| *i >= min && ends.contains(c))
        .map(|(i, c)| i + c.len_utf8())
}

fn floor_char_boundary(s: &str, max: usize) -> usize {
    let mut i = max.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_one_part() {
        assert_eq!(split("你好", MAX_PART_BYTES), vec!["你好"]);
        assert!(split("   ", MAX_PART_BYTES).is_empty());
    }

    #[test]
    fn long_chinese_text_splits_on_sentences_under_the_limit() {
        let sentence = "这是一个比较长的句子，用来测试分段发送。";
        let text = sentence.repeat(150);
        let parts = split(&text, MAX_PART_BYTES);
        assert!(parts.len() > 1);
        for p in &parts {
            assert!(p.len() <= MAX_PART_BYTES, "{}", p.len());
            assert!(
                p.ends_with('。'),
                "cut inside a sentence: ...{}",
                &p[p.len() - 9..]
            );
        }
        assert_eq!(parts.concat(), text);
    }

    #[test]
    fn text_without_breaks_splits_between_characters() {
        let text = "字".repeat(3000);
        let parts = split(&text, MAX_PART_BYTES);
        for p in &parts {
            assert!(p.len() <= MAX_PART_BYTES);
        }
        assert_eq!(parts.concat(), text);
    }
}
