//! Python `fnmatch.fnmatchcase` semantics (what `fnmatch.fnmatch` does on POSIX).
//!
//! Whole-string match over code points: `*` any run (including `/`), `?` one code point,
//! `[seq]` / `[!seq]` a set with `a-z` ranges. A `[` without a closing `]` is a literal,
//! as in CPython's `fnmatch.translate`.

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Literal(char),
    Any,
    Star,
    Class {
        negate: bool,
        items: Vec<(char, char)>,
    },
    /// `[]`-style empty set: never matches (CPython emits `(?!)`).
    Never,
}

/// A compiled pattern.
#[derive(Debug, Clone)]
pub struct Pattern {
    tokens: Vec<Token>,
}

impl Pattern {
    pub fn new(pat: &str) -> Pattern {
        let chars: Vec<char> = pat.chars().collect();
        let n = chars.len();
        let mut tokens = Vec::new();
        let mut i = 0;
        while i < n {
            let c = chars[i];
            i += 1;
            match c {
                '*' => {
                    if tokens.last() != Some(&Token::Star) {
                        tokens.push(Token::Star);
                    }
                }
                '?' => tokens.push(Token::Any),
                '[' => {
                    let mut j = i;
                    if j < n && chars[j] == '!' {
                        j += 1;
                    }
                    if j < n && chars[j] == ']' {
                        j += 1;
                    }
                    while j < n && chars[j] != ']' {
                        j += 1;
                    }
                    if j >= n {
                        tokens.push(Token::Literal('['));
                        continue;
                    }
                    let stuff = &chars[i..j];
                    i = j + 1;
                    tokens.push(parse_class(stuff));
                }
                other => tokens.push(Token::Literal(other)),
            }
        }
        Pattern { tokens }
    }

    pub fn matches(&self, name: &str) -> bool {
        let s: Vec<char> = name.chars().collect();
        match_tokens(&self.tokens, &s)
    }
}

fn parse_class(stuff: &[char]) -> Token {
    if stuff.is_empty() {
        return Token::Never;
    }
    if stuff == ['!'] {
        // CPython maps a set that is just '!' to any single character.
        return Token::Any;
    }
    let (negate, body) = if stuff[0] == '!' {
        (true, &stuff[1..])
    } else {
        (false, stuff)
    };
    let mut items = Vec::new();
    let mut k = 0;
    while k < body.len() {
        if k + 2 < body.len() && body[k + 1] == '-' {
            let (lo, hi) = (body[k], body[k + 2]);
            // CPython drops reversed ranges.
            if lo <= hi {
                items.push((lo, hi));
            }
            k += 3;
        } else {
            items.push((body[k], body[k]));
            k += 1;
        }
    }
    if items.is_empty() {
        return if negate { Token::Any } else { Token::Never };
    }
    Token::Class { negate, items }
}

fn match_one(tok: &Token, c: char) -> bool {
    match tok {
        Token::Literal(l) => *l == c,
        Token::Any => true,
        Token::Class { negate, items } => {
            items.iter().any(|&(lo, hi)| lo <= c && c <= hi) != *negate
        }
        Token::Never => false,
        Token::Star => unreachable!(),
    }
}

/// Iterative wildcard match with single-star backtracking (linear in practice).
fn match_tokens(tokens: &[Token], s: &[char]) -> bool {
    let (mut ti, mut si) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if ti < tokens.len() && tokens[ti] == Token::Star {
            star = Some((ti, si));
            ti += 1;
        } else if ti < tokens.len() && match_one(&tokens[ti], s[si]) {
            ti += 1;
            si += 1;
        } else if let Some((st, ss)) = star {
            ti = st + 1;
            si = ss + 1;
            star = Some((st, ss + 1));
        } else {
            return false;
        }
    }
    while ti < tokens.len() && tokens[ti] == Token::Star {
        ti += 1;
    }
    ti == tokens.len()
}

/// Convenience: does `name` match `pat` with fnmatch semantics?
pub fn fnmatch(name: &str, pat: &str) -> bool {
    Pattern::new(pat).matches(name)
}

#[cfg(test)]
mod tests {
    use super::fnmatch;

    #[test]
    fn python_fnmatch_cases() {
        // (name, pattern, expected) — each checked against CPython 3.11 fnmatch.fnmatchcase.
        let cases = [
            ("model.lock", "*.lock", true),
            ("a/b.lock", "*.lock", true),
            (".DS_Store", ".DS_Store", true),
            ("._foo", "._*", true),
            ("x._foo", "._*", false),
            ("Icon\r", "Icon\r", true),
            ("Icon", "Icon\r", false),
            ("notes~", "*~", true),
            (".a.swp", ".*.swp", true),
            ("a.swp", ".*.swp", false),
            ("keep.txt", "[!k]eep.txt", false),
            ("peep.txt", "[!k]eep.txt", true),
            ("[x].txt", "[x].txt", false),
            ("x.txt", "[x].txt", true),
            ("[abc", "[abc", true),
            ("b", "[a-c]", true),
            ("d", "[a-c]", false),
            ("]", "[]]", true),
            ("a", "[!]", false),
            ("[!]", "[!]", true),
            ("b", "[z-a]", false),
            ("-", "[a-]", true),
            ("a", "[]", false),
            ("MODEL.LOCK", "*.lock", false),
            ("", "*", true),
            ("abc", "a*b*c", true),
            ("abdc", "a*b*c", true),
            ("acb", "a*b*c", false),
            ("$RECYCLE.BIN", "$RECYCLE.BIN", true),
            ("q", "?", true),
            ("qq", "?", false),
            ("é", "?", true),
        ];
        for (name, pat, want) in cases {
            assert_eq!(fnmatch(name, pat), want, "fnmatch({name:?}, {pat:?})");
        }
    }
}
