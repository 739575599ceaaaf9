//! Counting macro call sites in Rust source without a parser.
//!
//! A small lexer blanks out comments and the insides of string and character literals, so a
//! `precondition!(` in a doc comment or a message is not counted. Items under `#[cfg(test)]`
//! (inline test modules, test helpers, and `#[cfg(test)] mod name;` files) are not counted
//! either: the table is about what the shipped code checks.

use std::collections::BTreeMap;
use std::ops::Range;

/// Blanks comments and literal contents with spaces, keeping every byte offset and newline,
/// so what is left is code (identifiers, punctuation, delimiters).
pub fn code_only(source: &str) -> Vec<u8> {
    let bytes = source.as_bytes();
    let mut out = bytes.to_vec();
    let blank = |out: &mut Vec<u8>, range: Range<usize>| {
        for byte in &mut out[range] {
            if *byte != b'\n' {
                *byte = b' ';
            }
        }
    };
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes[i];
        let next = bytes.get(i + 1).copied();
        if byte == b'/' && next == Some(b'/') {
            let end = bytes[i..].iter().position(|&b| b == b'\n').map_or(bytes.len(), |n| i + n);
            blank(&mut out, i..end);
            i = end;
        } else if byte == b'/' && next == Some(b'*') {
            // Block comments nest in Rust.
            let mut depth = 0usize;
            let mut j = i;
            while j < bytes.len() {
                if bytes[j..].starts_with(b"/*") {
                    depth += 1;
                    j += 2;
                } else if bytes[j..].starts_with(b"*/") {
                    depth -= 1;
                    j += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    j += 1;
                }
            }
            blank(&mut out, i..j);
            i = j;
        } else if byte == b'"' {
            let end = string_end(bytes, i + 1);
            blank(&mut out, i + 1..end.saturating_sub(1).max(i + 1));
            i = end;
        } else if let Some((hashes, quote)) = raw_string_start(bytes, i) {
            let closing: Vec<u8> = std::iter::once(b'"').chain(std::iter::repeat_n(b'#', hashes)).collect();
            let body = quote + 1;
            let end = bytes[body..]
                .windows(closing.len())
                .position(|window| window == closing.as_slice())
                .map_or(bytes.len(), |n| body + n + closing.len());
            blank(&mut out, body..end.saturating_sub(closing.len()).max(body));
            i = end;
        } else if byte == b'\'' {
            match char_literal_end(bytes, i) {
                Some(end) => {
                    blank(&mut out, i + 1..end - 1);
                    i = end;
                }
                // A lifetime or a loop label.
                None => i += 1,
            }
        } else if is_ident_byte(byte) {
            // Skip the whole identifier so an `r` or `b` inside one never starts a literal.
            i = bytes[i..].iter().position(|&b| !is_ident_byte(b)).map_or(bytes.len(), |n| i + n);
        } else {
            i += 1;
        }
    }
    out
}

fn is_ident_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_' || byte >= 0x80
}

/// Given the index just after an opening `"`, the index just after the closing `"`.
fn string_end(bytes: &[u8], mut i: usize) -> usize {
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return i + 1,
            _ => i += 1,
        }
    }
    bytes.len()
}

/// If a raw string literal (`r"`, `r#"`, `br##"`, `cr"`) starts at `i`, its number of `#`s
/// and the index of its opening `"`.
fn raw_string_start(bytes: &[u8], i: usize) -> Option<(usize, usize)> {
    if i > 0 && is_ident_byte(bytes[i - 1]) {
        return None;
    }
    let mut j = i;
    if matches!(bytes.get(j), Some(b'b' | b'c')) {
        j += 1;
    }
    if bytes.get(j) != Some(&b'r') {
        return None;
    }
    j += 1;
    let hashes = bytes[j..].iter().take_while(|&&b| b == b'#').count();
    j += hashes;
    (bytes.get(j) == Some(&b'"')).then_some((hashes, j))
}

/// If a character literal starts at the `'` at `i`, the index just after its closing `'`;
/// `None` for a lifetime or a label.
fn char_literal_end(bytes: &[u8], i: usize) -> Option<usize> {
    let first = *bytes.get(i + 1)?;
    if first == b'\\' {
        // An escape: `'\n'`, `'\''`, `'\u{1F600}'`.
        let close = bytes[i + 3..].iter().position(|&b| b == b'\'')?;
        return Some(i + 3 + close + 1);
    }
    let width = match first {
        0x00..=0x7F => 1,
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        _ => 4,
    };
    (bytes.get(i + 1 + width) == Some(&b'\'')).then_some(i + 2 + width)
}

/// Byte ranges of items under `#[cfg(test)]` (or `#[cfg(all(test, ...))]`) in code produced
/// by [`code_only`], and the names of out-of-line modules declared as `#[cfg(test)] mod name;`.
pub fn test_items(code: &[u8]) -> (Vec<Range<usize>>, Vec<String>) {
    let mut ranges = Vec::new();
    let mut modules = Vec::new();
    let mut i = 0;
    while i < code.len() {
        if code[i] != b'#' {
            i += 1;
            continue;
        }
        let Some((attribute, after)) = attribute_at(code, i) else {
            i += 1;
            continue;
        };
        if !is_test_cfg(&attribute) {
            i = after;
            continue;
        }
        if code[i + 1..].iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'!') {
            // `#![cfg(test)]`: the whole file is test code.
            ranges.push(0..code.len());
            break;
        }
        // Skip further attributes, then find where the item ends: the first `;` outside
        // brackets, or the `}` that closes its first top-level `{`.
        let mut j = after;
        loop {
            j = skip_whitespace(code, j);
            match attribute_at(code, j) {
                Some((_, next)) => j = next,
                None => break,
            }
        }
        let item_start = j;
        let mut depth = 0usize;
        let mut end = code.len();
        while j < code.len() {
            match code[j] {
                b'(' | b'[' => depth += 1,
                b')' | b']' => depth = depth.saturating_sub(1),
                b';' if depth == 0 => {
                    end = j + 1;
                    if let Some(name) = module_name(&code[item_start..j]) {
                        modules.push(name);
                    }
                    break;
                }
                b'{' if depth == 0 => {
                    end = matching_brace(code, j);
                    break;
                }
                _ => {}
            }
            j += 1;
        }
        ranges.push(i..end);
        i = end;
    }
    (ranges, modules)
}

/// The attribute starting at `i` (`#[...]` or `#![...]`) with whitespace removed, and the
/// index after its closing `]`.
fn attribute_at(code: &[u8], i: usize) -> Option<(String, usize)> {
    if code.get(i) != Some(&b'#') {
        return None;
    }
    let mut j = skip_whitespace(code, i + 1);
    if code.get(j) == Some(&b'!') {
        j = skip_whitespace(code, j + 1);
    }
    if code.get(j) != Some(&b'[') {
        return None;
    }
    let mut depth = 0usize;
    let start = j;
    while j < code.len() {
        match code[j] {
            b'[' => depth += 1,
            b']' => {
                depth -= 1;
                if depth == 0 {
                    let text: String = code[start..=j]
                        .iter()
                        .filter(|b| !b.is_ascii_whitespace())
                        .map(|&b| b as char)
                        .collect();
                    return Some((text, j + 1));
                }
            }
            _ => {}
        }
        j += 1;
    }
    None
}

fn is_test_cfg(attribute: &str) -> bool {
    attribute == "[cfg(test)]" || attribute.starts_with("[cfg(all(test,")
}

fn skip_whitespace(code: &[u8], mut i: usize) -> usize {
    while code.get(i).is_some_and(|b| b.is_ascii_whitespace()) {
        i += 1;
    }
    i
}

/// The `}` matching the `{` at `open`, plus one.
fn matching_brace(code: &[u8], open: usize) -> usize {
    let mut depth = 0usize;
    for (j, &byte) in code.iter().enumerate().skip(open) {
        match byte {
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return j + 1;
                }
            }
            _ => {}
        }
    }
    code.len()
}

/// `name` if `item` is `[pub[(...)]] mod name`.
fn module_name(item: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(item);
    let mut words = text.split_whitespace().skip_while(|word| word.starts_with("pub"));
    (words.next()? == "mod").then(|| words.next().map(str::to_string))?
}

/// Counts invocations `name!(`, `name![` or `name!{` of each macro in `names`, in code
/// produced by [`code_only`], outside `excluded` ranges and outside lines that define a
/// macro. A path prefix (`rsl_core::invariant!`) counts; a longer name (`debug_assert!`)
/// does not.
pub fn count_macros<'a>(code: &[u8], names: &[&'a str], excluded: &[Range<usize>]) -> BTreeMap<&'a str, u32> {
    names.iter().map(|&name| (name, invocations(code, name, excluded).len() as u32)).collect()
}

/// The first word inside each invocation of macro `name` (as [`count_macros`] finds them):
/// for `safety!(TruncateOnlyChosen, ...)`, `TruncateOnlyChosen`. An invocation that starts
/// with no identifier gives an empty word.
pub fn first_words(code: &[u8], name: &str, excluded: &[Range<usize>]) -> Vec<String> {
    invocations(code, name, excluded)
        .into_iter()
        .map(|open| {
            let start = skip_whitespace(code, open);
            let end = code[start..].iter().position(|&b| !is_ident_byte(b)).map_or(code.len(), |n| start + n);
            String::from_utf8_lossy(&code[start..end]).into_owned()
        })
        .collect()
}

/// The offset just after the opening delimiter of each invocation of macro `name`.
fn invocations(code: &[u8], name: &str, excluded: &[Range<usize>]) -> Vec<usize> {
    let mut found = Vec::new();
    let mut line_start = 0;
    for line in code.split(|&b| b == b'\n') {
        let line_range = line_start..line_start + line.len();
        line_start += line.len() + 1;
        if line.windows(b"macro_rules".len()).any(|w| w == b"macro_rules") {
            continue;
        }
        let name_bytes = name.as_bytes();
        let mut from = 0;
        while let Some(at) = find(&line[from..], name_bytes).map(|found| from + found) {
            from = at + name_bytes.len();
            let before_ok = at == 0 || !is_ident_byte(line[at - 1]);
            let mut j = skip_whitespace(line, at + name_bytes.len());
            let bang = line.get(j) == Some(&b'!');
            j = skip_whitespace(line, j + 1);
            let open = matches!(line.get(j), Some(b'(' | b'[' | b'{'));
            let offset = line_range.start + at;
            let in_excluded = excluded.iter().any(|range| range.contains(&offset));
            if before_ok && bang && open && !in_excluded {
                found.push(line_range.start + j + 1);
            }
        }
    }
    found
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAMES: &[&str] = &["precondition", "postcondition", "invariant", "assert", "assert_eq"];

    fn counts(source: &str) -> Vec<(&'static str, u32)> {
        let code = code_only(source);
        let (excluded, _) = test_items(&code);
        count_macros(&code, NAMES, &excluded).into_iter().filter(|&(_, n)| n > 0).collect()
    }

    #[test]
    fn counts_invocations_with_paths_and_any_delimiter() {
        let source = r#"
            fn f(x: u64) {
                precondition!(x > 0, "x is {}", x);
                crate::invariant!(x < 10);
                invariant! [x < 11];
                assert!(x != 3);
                assert_eq!(x, x);
                debug_assert!(x > 0);
                my_precondition!(x);
                postcondition !(true);
            }
        "#;
        assert_eq!(
            counts(source),
            [("assert", 1), ("assert_eq", 1), ("invariant", 2), ("postcondition", 1), ("precondition", 1)]
        );
    }

    #[test]
    fn ignores_comments_strings_and_characters() {
        let source = r####"
            /// Calls `precondition!(x)` first.
            // invariant!(x)
            /* assert!(a) /* nested assert!(b) */ still a comment: assert!(c) */
            fn f() {
                let a = "precondition!(x) \" invariant!(y)";
                let b = r#"assert!(z) " still raw"#;
                let c = br##"assert!(z)"##;
                let quote = '"'; let escaped = '\''; let lifetime: &'static str = "";
                assert!(a.len() > 0);
            }
        "####;
        assert_eq!(counts(source), [("assert", 1)]);
    }

    #[test]
    fn raw_identifiers_and_prefixed_words_are_not_raw_strings() {
        let source = "fn f(r#type: u8, bar: u8) { let br = 1; assert!(r#type == bar); }";
        assert_eq!(counts(source), [("assert", 1)]);
    }

    #[test]
    fn skips_items_under_cfg_test() {
        let source = r#"
            fn live() { invariant!(true); }
            #[cfg(test)]
            mod tests {
                use super::*;
                #[test]
                fn t() { assert!(true); invariant!(true); }
            }
            #[cfg(all(test, feature = "x"))]
            fn helper() { assert_eq!(1, 1); }
            #[cfg(test)]
            #[path = "more_tests.rs"]
            pub(crate) mod more_tests;
            #[cfg(test)] const TABLE: [u8; 2] = [1, 2];
            fn also_live() { assert!(true); }
        "#;
        assert_eq!(counts(source), [("assert", 1), ("invariant", 1)]);
        let (_, modules) = test_items(&code_only(source));
        assert_eq!(modules, ["more_tests"]);
    }

    #[test]
    fn reads_the_first_word_of_each_invocation() {
        let source = "fn f() {\n safety!(TruncateOnlyChosen, a < b, \"x\");\n crate::safety! [ ChosenValueImmutable ];\n \
                      safety!((a), b);\n}\n#[cfg(test)]\nfn t() { safety!(Hidden, true); }";
        let code = code_only(source);
        let (excluded, _) = test_items(&code);
        assert_eq!(
            first_words(&code, "safety", &excluded),
            ["TruncateOnlyChosen", "ChosenValueImmutable", ""]
        );
    }

    #[test]
    fn skips_macro_definitions() {
        let source =
            "macro_rules! invariant {\n ($c:expr) => { assert!($c) };\n}\nfn f() { invariant!(true); }";
        // The body line of the definition still counts its `assert!`: only the
        // `macro_rules!` line itself is skipped; definitions files are skipped by the caller.
        assert_eq!(counts(source), [("assert", 1), ("invariant", 1)]);
    }

    #[test]
    fn offsets_are_preserved() {
        let source = "let s = \"é // x\"; // ü\nx";
        let code = code_only(source);
        assert_eq!(code.len(), source.len());
        assert_eq!(code.iter().filter(|&&b| b == b'\n').count(), 1);
        assert!(std::str::from_utf8(&code).is_ok());
    }
}
