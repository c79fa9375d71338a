//! Azure cloud profiles: Entra authority hosts, ARM audiences, and the audience/scope helpers.

/// The ARM resource v1beta1 asks IMDS for (env `ARM_RESOURCE` overrides it).
pub const V1BETA1_ARM_RESOURCE: &str = "https://management.azure.com/";

/// The Azure Container Registry audience, the same in every cloud.
pub const ACR_AUDIENCE: &str = "https://containerregistry.azure.net";

/// One Azure cloud: where Entra lives and which audience ARM tokens carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudProfile {
    /// Entra authority host, with a trailing `/` (e.g. `https://login.microsoftonline.com/`).
    pub authority_host: String,
    /// ARM audience as upstream writes it (some with, some without a trailing `/`).
    pub arm_audience: String,
}

/// The clouds a v1beta2 binding can name in `spec.acr.environment`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cloud {
    /// `PublicCloud`.
    Public,
    /// `USGovernmentCloud`.
    UsGovernment,
    /// `ChinaCloud`.
    China,
    /// `AirgappedCloud`, described by the binding's `cloudConfig`.
    Airgapped {
        /// `cloudConfig.entraAuthorityHost`.
        authority_host: String,
        /// `cloudConfig.resourceManagerAudience`.
        arm_audience: String,
    },
}

impl Cloud {
    /// Parses the API's environment name; `None` for an unknown one.
    pub fn from_environment(name: &str, authority_host: &str, arm_audience: &str) -> Option<Cloud> {
        match name {
            "" | "PublicCloud" => Some(Cloud::Public),
            "USGovernmentCloud" => Some(Cloud::UsGovernment),
            "ChinaCloud" => Some(Cloud::China),
            "AirgappedCloud" => Some(Cloud::Airgapped {
                authority_host: authority_host.to_owned(),
                arm_audience: arm_audience.to_owned(),
            }),
            _ => None,
        }
    }

    /// The profile of this cloud (spec §4.4).
    pub fn profile(&self) -> CloudProfile {
        let (authority, audience) = match self {
            Cloud::Public => (
                "https://login.microsoftonline.com/",
                "https://management.core.windows.net/",
            ),
            Cloud::UsGovernment => (
                "https://login.microsoftonline.us/",
                "https://management.core.usgovcloudapi.net",
            ),
            Cloud::China => (
                "https://login.chinacloudapi.cn/",
                "https://management.core.chinacloudapi.cn",
            ),
            Cloud::Airgapped {
                authority_host,
                arm_audience,
            } => (authority_host.as_str(), arm_audience.as_str()),
        };
        CloudProfile {
            authority_host: with_trailing_slash(authority),
            arm_audience: audience.to_owned(),
        }
    }
}

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

fn with_trailing_slash(host: &str) -> String {
    if host.ends_with('/') {
        host.to_owned()
    } else {
        format!("{host}/")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_cloud_scope_has_the_upstream_double_slash() {
        let p = Cloud::Public.profile();
        assert_eq!(
            scope_for(&p.arm_audience),
            "https://management.core.windows.net//.default"
        );
        assert_eq!(p.authority_host, "https://login.microsoftonline.com/");
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

    #[test]
    fn environments_map_to_their_profiles() {
        let gov = Cloud::from_environment("USGovernmentCloud", "", "").unwrap();
        assert_eq!(
            gov.profile().authority_host,
            "https://login.microsoftonline.us/"
        );
        let china = Cloud::from_environment("ChinaCloud", "", "").unwrap();
        assert_eq!(
            china.profile().arm_audience,
            "https://management.core.chinacloudapi.cn"
        );
        let air = Cloud::from_environment("AirgappedCloud", "https://login.air", "https://arm.air")
            .unwrap();
        assert_eq!(air.profile().authority_host, "https://login.air/");
        assert_eq!(air.profile().arm_audience, "https://arm.air");
        assert_eq!(Cloud::from_environment("Mars", "", ""), None);
    }
}
