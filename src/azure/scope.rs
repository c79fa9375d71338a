//! Entra scopes and IMDS resources for an audience (the clouds' audiences and authority hosts are
//! decoded with the binding's spec).

/// The Entra scope for an audience: `<audience>/.default`, kept verbatim so the public ARM
/// audience yields upstream's double slash.
pub fn scope_for(audience: &str) -> String {
    format!("{audience}/.default")
}

/// The IMDS resource for a scope or audience: a trailing `/.default` removed.
pub fn resource_for(scope_or_audience: &str) -> &str {
    scope_or_audience
        .strip_suffix("/.default")
        .unwrap_or(scope_or_audience)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_cloud_scope_has_the_upstream_double_slash() {
        assert_eq!(
            scope_for("https://management.core.windows.net/"),
            "https://management.core.windows.net//.default"
        );
    }

    #[test]
    fn imds_resource_drops_only_the_default_suffix() {
        assert_eq!(
            resource_for("https://management.core.windows.net//.default"),
            "https://management.core.windows.net/"
        );
        assert_eq!(
            resource_for("https://management.core.usgovcloudapi.net"),
            "https://management.core.usgovcloudapi.net"
        );
    }
}
