//! The one Entra/IMDS token request: a resolved credential and an audience in, the request that
//! asks Azure out. The token service wraps it in its cache and single-flight; `acrpull check`
//! calls it past every cache and reports what was asked, so what check shows is what the
//! controller sends.

use time::OffsetDateTime;

use crate::azure::entra::AssertionRequest;
use crate::azure::imds::ManagedIdentity;
use crate::azure::scope::{resource_for, scope_for};
use crate::azure::AccessToken;
use crate::tokens::{Credential, TokenError, Upstream, UpstreamKind};

/// What is about to be asked of Azure, without the assertion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ask<'a> {
    /// IMDS, for a managed identity.
    Imds {
        /// The identity asking.
        identity: &'a ManagedIdentity,
        /// The IMDS resource: the audience without `/.default`.
        resource: &'a str,
    },
    /// Entra's client-assertion flow.
    ClientAssertion {
        /// The Entra authority host.
        authority_host: &'a str,
        /// The tenant ID.
        tenant: &'a str,
        /// The application (client) ID.
        client_id: &'a str,
        /// The Entra scope: `<resource>/.default`.
        scope: &'a str,
    },
}

impl Ask<'_> {
    /// The upstream endpoint this asks, for counters.
    pub fn upstream(&self) -> UpstreamKind {
        match self {
            Ask::Imds { .. } => UpstreamKind::Imds,
            Ask::ClientAssertion { .. } => UpstreamKind::Entra,
        }
    }
}

/// Asks IMDS or Entra for `credential`'s token for `audience`, uncached. `asking` hears what is
/// asked just before it is sent; when it was not called, the error is the assertion's and Azure
/// was never asked (callers count and hint by that).
pub fn entra_token(
    upstream: &dyn Upstream,
    credential: &Credential,
    audience: &str,
    now: OffsetDateTime,
    asking: &mut dyn FnMut(&Ask<'_>),
) -> Result<AccessToken, TokenError> {
    let resource = resource_for(audience);
    match credential {
        Credential::Managed(identity) => {
            asking(&Ask::Imds { identity, resource });
            upstream.managed_identity_token(identity, resource, now)
        }
        Credential::ClientAssertion(c) => {
            // Minted only now, after any cache missed: ServiceAccount tokens cost an API call.
            let assertion = c.source.assertion()?;
            let scope = scope_for(resource);
            asking(&Ask::ClientAssertion {
                authority_host: &c.authority_host,
                tenant: &c.tenant,
                client_id: &c.client_id,
                scope: &scope,
            });
            let request = AssertionRequest {
                authority_host: &c.authority_host,
                tenant: &c.tenant,
                client_id: &c.client_id,
                assertion: &assertion,
                scope: &scope,
            };
            upstream.client_assertion_token(&request, now)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::azure::SecretString;
    use crate::tokens::{AssertionError, AssertionSource, ClientAssertion};
    use std::fmt;
    use std::sync::{Arc, Mutex};

    /// Records the calls upstream sees, in the order made.
    #[derive(Default)]
    struct Recorder {
        calls: Mutex<Vec<String>>,
    }

    impl Recorder {
        fn calls(&self) -> Vec<String> {
            self.calls
                .lock()
                .expect("no test panics holding it")
                .clone()
        }

        fn token(&self, call: String, now: OffsetDateTime) -> Result<AccessToken, TokenError> {
            self.calls
                .lock()
                .expect("no test panics holding it")
                .push(call);
            Ok(AccessToken {
                token: SecretString::new("t"),
                expires: now,
                refresh_at: None,
            })
        }
    }

    impl Upstream for Recorder {
        fn managed_identity_token(
            &self,
            identity: &ManagedIdentity,
            resource: &str,
            now: OffsetDateTime,
        ) -> Result<AccessToken, TokenError> {
            self.token(format!("imds {identity:?} {resource}"), now)
        }

        fn client_assertion_token(
            &self,
            r: &AssertionRequest<'_>,
            now: OffsetDateTime,
        ) -> Result<AccessToken, TokenError> {
            let call = format!(
                "entra {} {} {} {} {}",
                r.authority_host,
                r.tenant,
                r.client_id,
                r.scope,
                r.assertion.expose()
            );
            self.token(call, now)
        }

        fn acr_refresh_token(
            &self,
            _registry: &str,
            _entra_token: &SecretString,
        ) -> Result<SecretString, TokenError> {
            unreachable!("not part of the Entra request")
        }

        fn acr_access_token(
            &self,
            _registry: &str,
            _refresh_token: &SecretString,
            _scope: &str,
        ) -> Result<SecretString, TokenError> {
            unreachable!("not part of the Entra request")
        }
    }

    #[derive(Debug)]
    struct Refused;

    impl fmt::Display for Refused {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("forbidden")
        }
    }

    impl std::error::Error for Refused {}

    #[derive(Debug)]
    struct Assertions(Option<&'static str>);

    impl AssertionSource for Assertions {
        fn key(&self) -> String {
            "ns/sa".to_string()
        }

        fn assertion(&self) -> Result<SecretString, AssertionError> {
            self.0
                .map(SecretString::new)
                .ok_or_else(|| AssertionError::new(Refused))
        }
    }

    fn workload(assertion: Option<&'static str>) -> Credential {
        Credential::ClientAssertion(ClientAssertion {
            authority_host: "https://login.example/".into(),
            tenant: "tenant-1".into(),
            client_id: "app-1".into(),
            source: Arc::new(Assertions(assertion)),
        })
    }

    const NOW: OffsetDateTime = time::macros::datetime!(2026-01-01 00:00:00 UTC);

    #[test]
    fn a_managed_identity_asks_imds_for_the_resource_of_its_audience() {
        let upstream = Recorder::default();
        let mi = Credential::Managed(ManagedIdentity::ClientId("c".into()));
        let mut asked = Vec::new();
        entra_token(
            &upstream,
            &mi,
            "https://management.core.windows.net//.default",
            NOW,
            &mut |a| asked.push((a.upstream(), format!("{a:?}"))),
        )
        .expect("the recorder answers");
        assert_eq!(
            upstream.calls(),
            ["imds ClientId(\"c\") https://management.core.windows.net/"]
        );
        assert_eq!(asked.len(), 1);
        assert_eq!(asked[0].0, UpstreamKind::Imds);
    }

    #[test]
    fn a_client_assertion_asks_entra_for_the_default_scope_and_says_so_first() {
        let upstream = Recorder::default();
        let mut asked = Vec::new();
        entra_token(
            &upstream,
            &workload(Some("sa-token")),
            "https://management.core.windows.net/",
            NOW,
            &mut |a| {
                if let Ask::ClientAssertion {
                    authority_host,
                    tenant,
                    client_id,
                    scope,
                } = a
                {
                    asked.push(format!("{authority_host} {tenant} {client_id} {scope}"));
                }
                assert_eq!(a.upstream(), UpstreamKind::Entra);
            },
        )
        .expect("the recorder answers");
        let sent =
            "https://login.example/ tenant-1 app-1 https://management.core.windows.net//.default";
        assert_eq!(asked, [sent]);
        assert_eq!(upstream.calls(), [format!("entra {sent} sa-token")]);
    }

    #[test]
    fn a_refused_assertion_asks_nothing() {
        let upstream = Recorder::default();
        let mut asked = 0;
        let err = entra_token(
            &upstream,
            &workload(None),
            "https://management.core.windows.net/",
            NOW,
            &mut |_| asked += 1,
        )
        .expect_err("the assertion is refused");
        assert!(matches!(err, TokenError::Assertion(_)));
        assert_eq!(
            err.to_string(),
            "failed to mint service account token: forbidden"
        );
        assert_eq!(asked, 0);
        assert!(upstream.calls().is_empty());
    }
}
