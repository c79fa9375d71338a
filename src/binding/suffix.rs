//! Registry server validation against the allowed suffix list.
//!
//! Upstream's rules (spec §4.5) with two deliberate differences: the default list is the three
//! Azure registry domains instead of "no check", and a server is always parsed as a bare host (even
//! with the check disabled) because the token code must never send a token to a path or userinfo.

use std::fmt;

/// The allow-list used when the flag is absent.
pub const DEFAULT_SUFFIXES: [&str; 3] = ["azurecr.io", "azurecr.us", "azurecr.cn"];

/// Which registry hosts bindings may name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AllowList {
    /// Any host (the flag was a single `*`); servers must still be bare hosts.
    Any,
    /// Hosts equal to, or subdomains of, one of these normalised suffixes.
    Suffixes(Vec<String>),
}

impl Default for AllowList {
    /// `azurecr.io, azurecr.us, azurecr.cn`.
    fn default() -> Self {
        AllowList::Suffixes(DEFAULT_SUFFIXES.iter().map(|s| s.to_string()).collect())
    }
}

impl AllowList {
    /// Builds the list from the flag's occurrences (`None` = flag absent). Values are split like
    /// upstream; a lone `*` disables the check; a list that normalises to nothing keeps the default
    /// (an empty flag must not silently turn the protection off).
    pub fn from_flag(values: Option<&[String]>) -> AllowList {
        let Some(values) = values else {
            return AllowList::default();
        };
        let items = comma_separated_values(values);
        if items.len() == 1 && items[0] == "*" {
            return AllowList::Any;
        }
        let suffixes = normalize_suffixes(&items);
        if suffixes.is_empty() {
            return AllowList::default();
        }
        AllowList::Suffixes(suffixes)
    }

    /// Checks `server` (as written in the binding) and returns its parsed address.
    pub fn check(&self, server: &str) -> Result<ServerAddr, SuffixError> {
        let addr = parse_server(server).map_err(|reason| SuffixError::Invalid {
            server: server.to_string(),
            reason,
        })?;
        match self {
            AllowList::Any => Ok(addr),
            AllowList::Suffixes(list) => {
                let host = &addr.host;
                let ok = list.iter().any(|s| {
                    host == s
                        || (host.ends_with(s.as_str())
                            && host[..host.len() - s.len()].ends_with('.'))
                });
                if ok {
                    Ok(addr)
                } else {
                    Err(SuffixError::NotAllowed {
                        server: server.to_string(),
                        allowed: list.join(", "),
                    })
                }
            }
        }
    }
}

/// Why a server was refused; `Display` is upstream's exact status text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SuffixError {
    /// The server is not a bare host name.
    Invalid {
        /// The server as written.
        server: String,
        /// Why it does not parse.
        reason: ServerError,
    },
    /// The host is outside every allowed suffix.
    NotAllowed {
        /// The server as written.
        server: String,
        /// The normalised list, joined with `", "`.
        allowed: String,
    },
}

impl fmt::Display for SuffixError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SuffixError::Invalid { server, reason } => {
                write!(f, "ACR server {server:?} is invalid: {reason}")
            }
            SuffixError::NotAllowed { server, allowed } => write!(
                f,
                "ACR server {server:?} is not in the allowed ACR server suffixes: {allowed}"
            ),
        }
    }
}

impl std::error::Error for SuffixError {}

/// Why a server string is not a bare host name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerError {
    /// Nothing but spaces.
    Empty,
    /// It has a scheme, userinfo, path, query or fragment.
    NotBareHost,
    /// A character no host name may contain.
    InvalidCharacter {
        /// `https://` plus the trimmed server, as Go's URL error shows it.
        url: String,
        /// The offending character.
        ch: char,
    },
    /// The part after the last `:` is not a port.
    InvalidPort {
        /// `https://` plus the trimmed server.
        url: String,
        /// The text from the `:` on.
        port: String,
    },
    /// More than one `:` in the host.
    TooManyColons {
        /// The host part.
        host: String,
    },
    /// Only a port or a dot.
    EmptyHostname,
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerError::Empty => f.write_str("server is empty"),
            ServerError::NotBareHost => {
                f.write_str("server must be a host name without scheme, path, query, or fragment")
            }
            ServerError::InvalidCharacter { url, ch } => {
                write!(
                    f,
                    "parse {url:?}: invalid character {:?} in host name",
                    ch.to_string()
                )
            }
            ServerError::InvalidPort { url, port } => {
                write!(f, "parse {url:?}: invalid port {port:?} after host")
            }
            ServerError::TooManyColons { host } => write!(
                f,
                "server host is invalid: address {host}: too many colons in address"
            ),
            ServerError::EmptyHostname => f.write_str("server hostname is empty"),
        }
    }
}

impl std::error::Error for ServerError {}

/// A validated registry address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerAddr {
    /// Lower-cased host name, one trailing `.` removed.
    pub host: String,
    /// The port, when the server names one.
    pub port: Option<u16>,
}

impl ServerAddr {
    /// `host` or `host:port`: the authority to put after `https://`.
    pub fn authority(&self) -> String {
        match self.port {
            Some(p) => format!("{}:{p}", self.host),
            None => self.host.clone(),
        }
    }
}

/// Parses a server the way upstream does with `url.Parse("https://" + server)`, but stricter:
/// any `?` or `#` (even with nothing after it) is refused, and the host may only hold letters,
/// digits, `-`, `_` and `.`.
pub fn parse_server(server: &str) -> Result<ServerAddr, ServerError> {
    let trimmed = server.trim();
    if trimmed.is_empty() {
        return Err(ServerError::Empty);
    }
    if trimmed.contains(['/', '?', '#', '@', '\\']) {
        return Err(ServerError::NotBareHost);
    }
    let url = format!("https://{trimmed}");
    let (host, port) = match trimmed.rfind(':') {
        Some(i) => (&trimmed[..i], Some(&trimmed[i..])),
        None => (trimmed, None),
    };
    let port = match port {
        None | Some(":") => None,
        Some(p) => {
            let digits = &p[1..];
            if !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(ServerError::InvalidPort {
                    url,
                    port: p.to_string(),
                });
            }
            match digits.parse::<u16>() {
                Ok(n) => Some(n),
                Err(_) => {
                    return Err(ServerError::InvalidPort {
                        url,
                        port: p.to_string(),
                    })
                }
            }
        }
    };
    if host.contains(':') {
        return Err(ServerError::TooManyColons {
            host: trimmed.to_string(),
        });
    }
    if let Some(ch) = host
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(ServerError::InvalidCharacter { url, ch });
    }
    let lower = host.to_ascii_lowercase();
    let lower = lower.strip_suffix('.').unwrap_or(&lower);
    if lower.is_empty() {
        return Err(ServerError::EmptyHostname);
    }
    Ok(ServerAddr {
        host: lower.to_string(),
        port,
    })
}

/// The lower-cased host name of a server: the only host the token code may talk to.
pub fn server_host(server: &str) -> Result<String, ServerError> {
    parse_server(server).map(|a| a.host)
}

/// Flag values like upstream's `commaSeparatedValues`: every occurrence split on `,`, items
/// trimmed, empty items dropped.
pub fn comma_separated_values(values: &[String]) -> Vec<String> {
    values
        .iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Upstream's suffix normalisation: trim, lowercase, strip leading/trailing dots, drop empties,
/// de-duplicate keeping the first occurrence.
pub fn normalize_suffixes(suffixes: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for s in suffixes {
        let n = s.trim().to_lowercase();
        let n = n.trim_matches('.');
        if !n.is_empty() && !out.iter().any(|o| o == n) {
            out.push(n.to_string());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(items: &[&str]) -> AllowList {
        AllowList::Suffixes(normalize_suffixes(
            &items.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        ))
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn any_accepts_any_bare_host() {
        assert!(AllowList::Any.check("attacker.example.com").is_ok());
    }

    #[test]
    fn subdomain_of_configured_suffix_is_allowed() {
        let addr = list(&["azurecr.io"]).check("registry.azurecr.io").unwrap();
        assert_eq!(addr.host, "registry.azurecr.io");
    }

    #[test]
    fn suffix_matching_is_case_insensitive() {
        let addr = list(&[".AZURECR.IO."])
            .check("Registry.AzureCR.IO")
            .unwrap();
        assert_eq!(addr.host, "registry.azurecr.io");
    }

    #[test]
    fn exact_configured_domain_is_allowed() {
        assert!(list(&["registry.internal"])
            .check("registry.internal")
            .is_ok());
    }

    #[test]
    fn lookalike_suffix_is_rejected() {
        let err = list(&["azurecr.io"])
            .check("registry.azurecr.io.attacker.example.com")
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"ACR server "registry.azurecr.io.attacker.example.com" is not in the allowed ACR server suffixes: azurecr.io"#
        );
    }

    #[test]
    fn suffix_must_match_on_a_label_boundary() {
        assert!(list(&["azurecr.io"]).check("evilazurecr.io").is_err());
    }

    #[test]
    fn paths_are_rejected_when_validation_is_configured() {
        let err = list(&["azurecr.io"])
            .check("registry.azurecr.io/oauth2/exchange")
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"ACR server "registry.azurecr.io/oauth2/exchange" is invalid: server must be a host name without scheme, path, query, or fragment"#
        );
    }

    #[test]
    fn paths_are_rejected_even_when_any_host_is_allowed() {
        assert!(AllowList::Any.check("evil.example.com/x").is_err());
        assert!(AllowList::Any.check("user@evil.example.com").is_err());
        assert!(AllowList::Any.check("https://evil.example.com").is_err());
    }

    #[test]
    fn server_parse_errors_have_upstream_texts() {
        assert_eq!(
            parse_server("  ").unwrap_err().to_string(),
            "server is empty"
        );
        assert_eq!(
            parse_server(".").unwrap_err().to_string(),
            "server hostname is empty"
        );
        assert_eq!(
            parse_server(":443").unwrap_err().to_string(),
            "server hostname is empty"
        );
        assert_eq!(
            parse_server("a:1:2").unwrap_err().to_string(),
            "server host is invalid: address a:1:2: too many colons in address"
        );
        assert_eq!(
            parse_server("a:x").unwrap_err().to_string(),
            r#"parse "https://a:x": invalid port ":x" after host"#
        );
        assert_eq!(
            parse_server("a b").unwrap_err().to_string(),
            r#"parse "https://a b": invalid character " " in host name"#
        );
        assert_eq!(parse_server("host?").unwrap_err(), ServerError::NotBareHost);
    }

    #[test]
    fn ports_and_a_trailing_dot_are_tolerated() {
        let addr = parse_server(" Registry.AzureCR.io.:5000 ").unwrap();
        assert_eq!(addr.host, "registry.azurecr.io");
        assert_eq!(addr.port, Some(5000));
        assert_eq!(addr.authority(), "registry.azurecr.io:5000");
        assert_eq!(server_host("a.azurecr.io").unwrap(), "a.azurecr.io");
    }

    #[test]
    fn comma_separated_values_split_trim_and_drop_empties() {
        assert!(comma_separated_values(&strings(&[""])).is_empty());
        assert_eq!(
            comma_separated_values(&strings(&["azurecr.io"])),
            ["azurecr.io"]
        );
        assert_eq!(
            comma_separated_values(&strings(&[" azurecr.io, , azurecr.cn "])),
            ["azurecr.io", "azurecr.cn"]
        );
    }

    #[test]
    fn repeated_flag_values_accumulate() {
        assert_eq!(
            comma_separated_values(&strings(&["azurecr.io,azurecr.cn", "azurecr.de"])),
            ["azurecr.io", "azurecr.cn", "azurecr.de"]
        );
    }

    #[test]
    fn normalisation_lowercases_strips_dots_and_dedupes() {
        assert_eq!(
            normalize_suffixes(&strings(&[" .AzureCR.io. ", "azurecr.io", "", "..", "b"])),
            ["azurecr.io", "b"]
        );
    }

    #[test]
    fn absent_flag_means_the_azure_defaults() {
        assert_eq!(
            AllowList::from_flag(None),
            list(&["azurecr.io", "azurecr.us", "azurecr.cn"])
        );
        assert!(AllowList::from_flag(None).check("x.example.com").is_err());
    }

    #[test]
    fn a_lone_star_disables_the_check() {
        assert_eq!(AllowList::from_flag(Some(&strings(&["*"]))), AllowList::Any);
        assert_eq!(
            AllowList::from_flag(Some(&strings(&["*,azurecr.io"]))),
            list(&["*", "azurecr.io"])
        );
    }

    #[test]
    fn an_empty_flag_keeps_the_defaults() {
        assert_eq!(
            AllowList::from_flag(Some(&strings(&[" , "]))),
            AllowList::default()
        );
    }
}
