//! Small text helpers shared by the agent core: accent folding for matching what
//! callers say (Portuguese and Spanish accents) regardless of case and diacritics.

/// `c` lower-cased with its accent removed (`Á` → `a`, `ç` → `c`); other characters
/// are only lower-cased.
pub fn fold_char(c: char) -> char {
    match c.to_lowercase().next().unwrap_or(c) {
        'á' | 'à' | 'â' | 'ã' | 'ä' => 'a',
        'é' | 'è' | 'ê' | 'ë' => 'e',
        'í' | 'ì' | 'î' | 'ï' => 'i',
        'ó' | 'ò' | 'ô' | 'õ' | 'ö' => 'o',
        'ú' | 'ù' | 'û' | 'ü' => 'u',
        'ç' => 'c',
        'ñ' => 'n',
        other => other,
    }
}

/// `text` lower-cased without accents.
pub fn fold(text: &str) -> String {
    text.chars().map(fold_char).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_case_and_accents() {
        assert_eq!(
            fold("Olá, AMANHÃ às Três, João! Ñandú"),
            "ola, amanha as tres, joao! nandu"
        );
        assert_eq!(fold_char('Ç'), 'c');
        assert_eq!(fold_char('?'), '?');
    }
}
