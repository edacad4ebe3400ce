//! "Did you mean …?": the closest known name to a misspelt one (kinds, fields), by edit
//! distance, case-insensitively; nothing when no name is close.

/// The candidate closest to `word`, if one is within a third of its length (at least 2 edits).
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).max(2);
    candidates
        .into_iter()
        .map(|c| (distance(&word.to_lowercase(), &c.to_lowercase()), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// ` (did you mean X?)` or nothing.
pub fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    closest(word, candidates)
        .map(|c| format!(" (did you mean {c}?)"))
        .unwrap_or_default()
}

/// Levenshtein distance over chars.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_names_and_far_ones() {
        let kinds = ["Canary", "MetricTemplate", "AlertProvider"];
        assert_eq!(closest("Canry", kinds), Some("Canary"));
        assert_eq!(closest("canary", kinds), Some("Canary"));
        assert_eq!(closest("MetricTemplates", kinds), Some("MetricTemplate"));
        assert_eq!(closest("Deployment", kinds), None);
        assert_eq!(
            did_you_mean("maxWieght", ["maxWeight", "stepWeight"]),
            " (did you mean maxWeight?)"
        );
        assert_eq!(distance("kitten", "sitting"), 3);
    }
}
