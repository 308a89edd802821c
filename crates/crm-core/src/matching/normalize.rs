//! Name normalisation before comparison.

use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

/// Normalises a name for matching:
///
/// 1. compatibility decomposition (Unicode NFKD), so `é` becomes `e` plus a
///    combining accent and `ﬁ` becomes `fi`;
/// 2. combining marks (accents) are removed;
/// 3. lower case (Unicode default case mapping; marks it produces, as for
///    `İ`, are removed too);
/// 4. every character that is not a letter or digit (Unicode alphanumeric)
///    becomes a space: punctuation, symbols, `_`, whitespace;
/// 5. runs of spaces collapse into one, and leading and trailing spaces go.
///
/// ```
/// use crm_core::matching::normalize;
///
/// assert_eq!(normalize("  Café-Crème: SPRING_2024!! "), "cafe creme spring 2024");
/// assert_eq!(normalize("Nestlé (UK) Ltd."), "nestle uk ltd");
/// assert_eq!(normalize("--"), "");
/// ```
pub fn normalize(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut pending_space = false;
    for c in name
        .nfkd()
        .filter(|c| !is_combining_mark(*c))
        .flat_map(char::to_lowercase)
        .filter(|c| !is_combining_mark(*c))
    {
        if c.is_alphanumeric() {
            if pending_space && !out.is_empty() {
                out.push(' ');
            }
            pending_space = false;
            out.push(c);
        } else {
            pending_space = true;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn case_accents_punctuation_and_whitespace() {
        assert_eq!(normalize("ACME Corp"), "acme corp");
        assert_eq!(normalize("Société Générale"), "societe generale");
        assert_eq!(normalize("Ångström   Åre"), "angstrom are");
        assert_eq!(normalize("Müller-Lüdenscheidt"), "muller ludenscheidt");
        assert_eq!(normalize("O'Brien & Sons, Inc."), "o brien sons inc");
        assert_eq!(normalize("\tSpring\u{00a0}Sale\n2024 "), "spring sale 2024");
        assert_eq!(normalize("ﬁnance ①"), "finance 1");
        assert_eq!(normalize("İstanbul"), "istanbul");
        assert_eq!(normalize("Straße"), "straße");
        assert_eq!(normalize(""), "");
        assert_eq!(normalize(" !?; "), "");
        assert_eq!(normalize("東京 Tokyo"), "東京 tokyo");
    }

    #[test]
    fn idempotent_on_common_text() {
        for s in [
            "Café-Crème",
            "ACME_corp 2024",
            "İstanbul",
            "Nestlé (UK)",
            "x  y",
        ] {
            let once = normalize(s);
            assert_eq!(normalize(&once), once, "{s}");
        }
    }
}
