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
    while !rest.is_empty() {
        let (head, tail) = split_first(rest, max);
        parts.push(head.to_owned());
        rest = tail;
    }
    parts
}

/// The first part of `text` (at most `max` bytes) and what follows it,
/// both trimmed at the cut.
pub fn split_first(text: &str, max: usize) -> (&str, &str) {
    let text = text.trim();
    if text.len() <= max {
        return (text, "");
    }
    let window = floor_char_boundary(text, max);
    let head = &text[..window];
    // Prefer the last sentence end in the second half of the window, so
    // parts do not become tiny.
    let min_cut = window / 2;
    let cut = last_cut(head, SENTENCE_ENDS, min_cut)
        .or_else(|| last_cut(head, &[' ', '，', ','], min_cut))
        .unwrap_or(window);
    (text[..cut].trim_end(), text[cut..].trim_start())
}

/// What of an answer goes out now, within `messages` messages, and what is
/// kept for later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fit {
    /// The messages to send, in order; when something is kept, the last one
    /// ends with the notice.
    pub parts: Vec<String>,
    /// What did not fit (empty: nothing).
    pub kept: String,
}

/// Fits `text` into at most `messages` messages of at most `max` bytes.
/// When it does not fit, the last message ends with `notice` (which must be
/// short next to `max`) and the rest is kept. With no message allowed,
/// everything is kept.
pub fn fit(text: &str, messages: usize, max: usize, notice: &str) -> Fit {
    let mut parts = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() && parts.len() < messages {
        let (head, tail) = split_first(rest, max);
        if tail.is_empty() {
            parts.push(head.to_owned());
            rest = tail;
        } else if parts.len() + 1 == messages {
            // The last message allowed: room for the notice.
            let (head, tail) = split_first(rest, max.saturating_sub(notice.len()).max(1));
            parts.push(format!("{head}{notice}"));
            rest = tail;
        } else {
            parts.push(head.to_owned());
            rest = tail;
        }
    }
    Fit {
        parts,
        kept: rest.to_owned(),
    }
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
    fn what_does_not_fit_is_kept_and_the_last_part_says_so() {
        let sentence = "这是一个比较长的句子，用来测试分段发送。";
        let text = sentence.repeat(600);
        let notice = "（回复「继续」查看后续）";
        let all = split(&text, MAX_PART_BYTES);
        assert!(all.len() > 5);
        let fit1 = fit(&text, 5, MAX_PART_BYTES, notice);
        assert_eq!(fit1.parts.len(), 5);
        for p in &fit1.parts {
            assert!(p.len() <= MAX_PART_BYTES, "{}", p.len());
        }
        assert!(fit1.parts[4].ends_with(notice));
        assert!(fit1.parts[..4].iter().all(|p| !p.ends_with(notice)));
        // Sent and kept are the whole answer, in order.
        let sent: String = fit1
            .parts
            .iter()
            .map(|p| p.trim_end_matches(notice))
            .collect();
        assert_eq!(format!("{sent}{}", fit1.kept), text);
        // An answer that fits goes out whole, without the notice.
        let short = fit(sentence, 5, MAX_PART_BYTES, notice);
        assert_eq!(
            (short.parts, short.kept.as_str()),
            (vec![sentence.to_owned()], "")
        );
        // Exactly as many parts as allowed: no notice.
        let exact = sentence.repeat(100);
        let n = split(&exact, MAX_PART_BYTES).len();
        let fitted = fit(&exact, n, MAX_PART_BYTES, notice);
        assert_eq!(
            (fitted.parts, fitted.kept.as_str()),
            (split(&exact, MAX_PART_BYTES), "")
        );
        // Nothing allowed: everything kept.
        let none = fit(&text, 0, MAX_PART_BYTES, notice);
        assert!(none.parts.is_empty());
        assert_eq!(none.kept, text);
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
