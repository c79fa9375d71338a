//! Pull Secret names, the binding label value, and ServiceAccount pull-secret ordering.
//!
//! Names are upstream's (spec §2.5) so a drop-in swap finds existing Secrets; where upstream produces
//! names Kubernetes rejects (v1beta1 names over 253, label values over 63) we hash instead.

use crate::binding::hash::inputs_hash;

/// The label every pull Secret carries; its value identifies the binding.
pub const BINDING_LABEL: &str = "acr.microsoft.com/binding";
/// Prefix of v1beta2 pull Secret names.
pub const V1BETA2_PREFIX: &str = "acr-pull-";
/// Suffix of v1beta1 pull Secret names.
pub const V1BETA1_SUFFIX: &str = "-msi-acrpull-secret";

/// Longest object name Kubernetes accepts (DNS-1123 subdomain).
const MAX_NAME: usize = 253;
/// Longest label value Kubernetes accepts.
const MAX_LABEL_VALUE: usize = 63;
/// How many hash characters disambiguate a shortened name.
const HASH_CHARS: usize = 10;

/// The first `HASH_CHARS` characters of upstream's base36 SHA-224 of `s`.
fn short_hash(s: &str) -> String {
    inputs_hash(s).chars().take(HASH_CHARS).collect()
}

/// The byte prefix of `s` of at most `n` bytes, cut on a character boundary.
fn prefix(s: &str, n: usize) -> &str {
    let mut end = n.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// `binding_name` cut to `keep` bytes, one trailing `.` dropped, then `-` and the name's short
/// hash: upstream's v1beta2 rule, which keeps the result a valid subdomain.
fn hashed_stem(binding_name: &str, keep: usize) -> String {
    let head = prefix(binding_name, keep);
    let head = head.strip_suffix('.').unwrap_or(head);
    format!("{head}-{}", short_hash(binding_name))
}

/// The v1beta1 Secret name: `<name>-msi-acrpull-secret`. Upstream has no length guard (creation
/// fails forever above 253); we hash the name like v1beta2 does, keeping the suffix, so the
/// VAP's `-msi-acrpull-secret$` rule still matches. Names that fit are unchanged.
pub fn v1beta1_secret_name(binding_name: &str) -> String {
    let plain = format!("{binding_name}{V1BETA1_SUFFIX}");
    if plain.len() <= MAX_NAME {
        return plain;
    }
    let keep = MAX_NAME - V1BETA1_SUFFIX.len() - HASH_CHARS - 1;
    format!("{}{V1BETA1_SUFFIX}", hashed_stem(binding_name, keep))
}

/// The v1beta2 Secret name: `acr-pull-<name>`, hashed above 233 characters (spec §2.5).
pub fn v1beta2_secret_name(binding_name: &str) -> String {
    let keep = MAX_NAME - HASH_CHARS - HASH_CHARS;
    if binding_name.len() <= keep {
        return format!("{V1BETA2_PREFIX}{binding_name}");
    }
    format!("{V1BETA2_PREFIX}{}", hashed_stem(binding_name, keep))
}

/// The value of the `acr.microsoft.com/binding` label for a binding. Names of up to 63
/// characters are used as they are (upstream-compatible); longer ones, which upstream cannot
/// label at all, become the first 52 characters without trailing punctuation, `-` and a hash.
pub fn binding_label_value(binding_name: &str) -> String {
    if binding_name.len() <= MAX_LABEL_VALUE && is_valid_label_value(binding_name) {
        return binding_name.to_string();
    }
    let head: String = binding_name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .take(MAX_LABEL_VALUE - HASH_CHARS - 1)
        .collect();
    let head = head.trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
    let head = head.trim_start_matches(|c: char| !c.is_ascii_alphanumeric());
    if head.is_empty() {
        return short_hash(binding_name);
    }
    format!("{head}-{}", short_hash(binding_name))
}

/// Whether `v` is a valid Kubernetes label value: at most 63 characters of
/// `(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?`.
pub fn is_valid_label_value(v: &str) -> bool {
    if v.is_empty() {
        return true;
    }
    let bytes = v.as_bytes();
    v.len() <= MAX_LABEL_VALUE
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Whether `name` is a valid DNS-1123 subdomain (the rule for Secret and binding names).
pub fn is_dns_subdomain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        })
}

/// Whether `name` looks like a pull Secret this controller manages (either naming scheme); the
/// only names the VAP lets us add to or remove from a ServiceAccount.
pub fn is_managed_name(name: &str) -> bool {
    name.starts_with(V1BETA2_PREFIX) || name.ends_with(V1BETA1_SUFFIX)
}

/// Sort rank of a pull-secret name: unrelated first, then `acr-pull-*`, then v1beta1 names, so
/// kubelet (which tries them in order) prefers v1beta2 credentials (spec §2.6).
fn rank(name: &str) -> u8 {
    if name.starts_with(V1BETA2_PREFIX) {
        1
    } else if name.ends_with(V1BETA1_SUFFIX) {
        2
    } else {
        0
    }
}

/// Sorts ServiceAccount pull-secret names like upstream: unrelated names alphabetically, then
/// `acr-pull-*`, then `*-msi-acrpull-secret`. Stable, so duplicates keep their relative order.
pub fn sort_pull_secrets(names: &mut [String]) {
    names.sort_by(|a, b| rank(a).cmp(&rank(b)).then_with(|| a.cmp(b)));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Rng;

    const GROUP: &str = "ebf8018b88187fa15444859cc3050ec7cb04ddc1ebf8018b88187fa15444859c";

    #[test]
    fn short_v1beta2_names_are_prefixed() {
        assert_eq!(
            v1beta2_secret_name("small-and-reasonable"),
            "acr-pull-small-and-reasonable"
        );
    }

    #[test]
    fn long_v1beta2_names_are_truncated_and_hashed_like_upstream() {
        let name = format!("extremely-long-{GROUP}-{GROUP}-{GROUP}-{GROUP}");
        let secret = v1beta2_secret_name(&name);
        assert_eq!(secret.len(), 253);
        assert!(
            secret.ends_with("-ebf8018b88187fa15444859-plvfti7qpc"),
            "{secret}"
        );
        assert!(is_dns_subdomain(&secret));
    }

    #[test]
    fn a_dot_at_the_cut_is_dropped() {
        // 232 'a' then '.' puts the dot exactly at the 233rd character.
        let name = format!("{}.{}", "a".repeat(232), "b".repeat(20));
        let secret = v1beta2_secret_name(&name);
        assert!(is_dns_subdomain(&secret), "{secret}");
        assert!(!secret.contains(".-"));
    }

    #[test]
    fn v1beta1_names_that_fit_are_unchanged() {
        assert_eq!(v1beta1_secret_name("binding"), "binding-msi-acrpull-secret");
        let name = "a".repeat(234);
        assert_eq!(
            v1beta1_secret_name(&name),
            format!("{name}-msi-acrpull-secret")
        );
    }

    #[test]
    fn v1beta1_names_over_253_are_hashed_and_keep_the_suffix() {
        let name = format!("{}.{}", "a".repeat(222), "b".repeat(30));
        let secret = v1beta1_secret_name(&name);
        assert!(secret.len() <= 253);
        assert!(secret.ends_with(V1BETA1_SUFFIX));
        assert!(is_dns_subdomain(&secret), "{secret}");
        assert_ne!(secret, v1beta1_secret_name(&format!("{name}x")));
    }

    /// A draw in `0..n`.
    fn below(rng: &mut Rng, n: usize) -> usize {
        rng.range_inclusive(0, n as u64 - 1) as usize
    }

    fn random_subdomain(rng: &mut Rng) -> String {
        const FIRST: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        const MID: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789-";
        let target = 1 + below(rng, 253);
        let mut labels = Vec::new();
        let mut len = 0;
        while len < target {
            let room = target - len - usize::from(!labels.is_empty());
            if room == 0 {
                break;
            }
            let l = 1 + below(rng, room.min(63));
            let mut label = String::new();
            for i in 0..l {
                let set = if i == 0 || i == l - 1 { FIRST } else { MID };
                label.push(char::from(set[below(rng, set.len())]));
            }
            len += l + usize::from(!labels.is_empty());
            labels.push(label);
        }
        labels.join(".")
    }

    #[test]
    fn generated_valid_names_always_give_valid_secret_names_and_label_values() {
        let mut rng = Rng::with_seed(42);
        for _ in 0..3000 {
            let name = random_subdomain(&mut rng);
            assert!(is_dns_subdomain(&name), "generator produced {name}");
            let v2 = v1beta2_secret_name(&name);
            assert!(is_dns_subdomain(&v2), "{name} -> {v2}");
            let v1 = v1beta1_secret_name(&name);
            assert!(is_dns_subdomain(&v1), "{name} -> {v1}");
            let label = binding_label_value(&name);
            assert!(is_valid_label_value(&label), "{name} -> {label}");
        }
    }

    #[test]
    fn label_values_up_to_63_are_the_name_itself() {
        let name = "b".repeat(63);
        assert_eq!(binding_label_value(&name), name);
        assert_eq!(binding_label_value("binding"), "binding");
    }

    #[test]
    fn long_label_values_are_shortened_deterministically_and_distinctly() {
        let a = format!("{}-x.y", "a".repeat(60));
        let b = format!("{}-x.z", "a".repeat(60));
        let la = binding_label_value(&a);
        assert!(la.len() <= 63 && is_valid_label_value(&la), "{la}");
        assert_eq!(la, binding_label_value(&a));
        assert_ne!(la, binding_label_value(&b));
    }

    #[test]
    fn sort_puts_unrelated_then_v1beta2_then_v1beta1() {
        let mut names: Vec<String> = [
            "b-msi-acrpull-secret",
            "acr-pull-b",
            "zeta",
            "a-msi-acrpull-secret",
            "acr-pull-a",
            "alpha",
            "acr-pull-x-msi-acrpull-secret",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        sort_pull_secrets(&mut names);
        assert_eq!(
            names,
            [
                "alpha",
                "zeta",
                "acr-pull-a",
                "acr-pull-b",
                "acr-pull-x-msi-acrpull-secret",
                "a-msi-acrpull-secret",
                "b-msi-acrpull-secret",
            ]
        );
    }
}
