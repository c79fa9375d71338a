//! The resource types the emulator serves: group, version, plural, kind, scope and subresources.

/// One served resource type.
#[derive(Debug, PartialEq, Eq)]
pub struct ResourceType {
    /// API group (`""` for core).
    pub group: &'static str,
    /// The one served version.
    pub version: &'static str,
    /// Lower-case plural, as in paths and RBAC rules.
    pub plural: &'static str,
    /// The `kind` of its objects.
    pub kind: &'static str,
    /// Whether objects live in namespaces.
    pub namespaced: bool,
    /// Whether it is a custom resource (CRD): generation, `/status`, no strategic merge patch.
    pub custom: bool,
}

impl ResourceType {
    /// `Kind` or `Kind.group`, as validation errors name it.
    pub fn qualified_kind(&self) -> String {
        if self.group.is_empty() {
            self.kind.to_string()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }

    /// `plural` or `plural.group`, as error messages name it.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// `v1` or `group/version`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The position of this type in [`ALL`], used as a compact key.
    pub fn index(&self) -> usize {
        ALL.iter()
            .position(|r| std::ptr::eq(*r, self) || *r == self)
            .expect("every ResourceType comes from ALL")
    }
}

/// core/v1 Namespaces.
pub static NAMESPACES: ResourceType = ResourceType {
    group: "",
    version: "v1",
    plural: "namespaces",
    kind: "Namespace",
    namespaced: false,
    custom: false,
};
/// core/v1 Secrets.
pub static SECRETS: ResourceType = ResourceType {
    group: "",
    version: "v1",
    plural: "secrets",
    kind: "Secret",
    namespaced: true,
    custom: false,
};
/// core/v1 ServiceAccounts.
pub static SERVICE_ACCOUNTS: ResourceType = ResourceType {
    group: "",
    version: "v1",
    plural: "serviceaccounts",
    kind: "ServiceAccount",
    namespaced: true,
    custom: false,
};
/// `acrpull.microsoft.com/v1beta2` AcrPullBindings.
pub static BINDINGS_V1BETA2: ResourceType = ResourceType {
    group: "acrpull.microsoft.com",
    version: "v1beta2",
    plural: "acrpullbindings",
    kind: "AcrPullBinding",
    namespaced: true,
    custom: true,
};
/// `msi-acrpull.microsoft.com/v1beta1` AcrPullBindings.
pub static BINDINGS_V1BETA1: ResourceType = ResourceType {
    group: "msi-acrpull.microsoft.com",
    version: "v1beta1",
    plural: "acrpullbindings",
    kind: "AcrPullBinding",
    namespaced: true,
    custom: true,
};
/// `coordination.k8s.io/v1` Leases.
pub static LEASES: ResourceType = ResourceType {
    group: "coordination.k8s.io",
    version: "v1",
    plural: "leases",
    kind: "Lease",
    namespaced: true,
    custom: false,
};
/// `events.k8s.io/v1` Events.
pub static EVENTS: ResourceType = ResourceType {
    group: "events.k8s.io",
    version: "v1",
    plural: "events",
    kind: "Event",
    namespaced: true,
    custom: false,
};

/// core/v1 Events (the older API; stored apart from `events.k8s.io` in the emulator).
pub static CORE_EVENTS: ResourceType = ResourceType {
    group: "",
    version: "v1",
    plural: "events",
    kind: "Event",
    namespaced: true,
    custom: false,
};

/// Every served type.
pub static ALL: [&ResourceType; 8] = [
    &NAMESPACES,
    &SECRETS,
    &SERVICE_ACCOUNTS,
    &BINDINGS_V1BETA2,
    &BINDINGS_V1BETA1,
    &LEASES,
    &EVENTS,
    &CORE_EVENTS,
];

/// Finds a type by `plural` (core types) or `plural.group`.
pub fn lookup(name: &str) -> Option<&'static ResourceType> {
    // Compared piecewise: `qualified()` allocates, and the benchmark looks types up per object.
    ALL.iter().copied().find(|r| {
        if r.group.is_empty() {
            r.plural == name
        } else {
            name.strip_prefix(r.plural)
                .and_then(|rest| rest.strip_prefix('.'))
                == Some(r.group)
        }
    })
}

/// Finds a type by group, version and plural, as a path names it.
pub fn by_path(group: &str, version: &str, plural: &str) -> Option<&'static ResourceType> {
    ALL.iter()
        .copied()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_finds_core_and_grouped_types() {
        assert_eq!(lookup("secrets").unwrap().kind, "Secret");
        assert_eq!(
            lookup("acrpullbindings.msi-acrpull.microsoft.com")
                .unwrap()
                .version,
            "v1beta1"
        );
        assert!(
            lookup("acrpullbindings").is_none(),
            "ambiguous without a group"
        );
    }

    #[test]
    fn index_is_the_position_in_all() {
        assert_eq!(LEASES.index(), 5);
        assert_eq!(by_path("", "v1", "secrets").unwrap().index(), 1);
    }
}
