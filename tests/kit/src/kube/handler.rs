//! The HTTP face of the emulator: routes paths to resources, authenticates, authorizes, applies
//! faults, dispatches to the store and logs every request.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use super::auth::{Attributes, Authz};
use super::discovery;
use super::faults::{Faults, LoggedRequest, RequestLog};
use super::resources::{self, ResourceType};
use super::selector::{FieldSelector, LabelSelector};
use super::status::ApiError;
use super::store::{PatchType, Preconditions, Store};
use super::token::{self, TokenRecord};
use super::watch;
use crate::http::{Handler, Request, Response};
use crate::jwt::Signer;

/// Shared state behind the emulator, also reached directly by [`super::ApiServer`].
pub struct Inner {
    /// Objects, events, watch control.
    pub store: Arc<Store>,
    /// Users and rules.
    pub authz: Mutex<Authz>,
    /// Injected faults.
    pub faults: Mutex<Faults>,
    /// Every request answered.
    pub log: Mutex<RequestLog>,
    /// Every TokenRequest granted.
    pub tokens: Mutex<Vec<TokenRecord>>,
    /// Signs ServiceAccount tokens.
    pub signer: Signer,
    /// Requests (watches aside) being answered and not yet logged: a test that sees a write's
    /// effect reads the log only once the write is in it.
    pub in_flight: std::sync::atomic::AtomicUsize,
}

/// Locks a mutex, shrugging off poisoning (a panicking test thread must not break the others).
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The `Handler` serving the Kubernetes API.
pub struct Api(pub Arc<Inner>);

/// A parsed resource path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The resource type.
    pub rt: &'static ResourceType,
    /// Namespace, or `""` (cluster-scoped, or all namespaces).
    pub ns: String,
    /// Object name, or `""` (collection).
    pub name: String,
    /// Subresource, or `""`.
    pub sub: String,
}

/// Parses an API path. `None` for paths outside `/api` and `/apis`.
pub fn parse_route(path: &str) -> Option<Result<Route, ApiError>> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", "v1", rest @ ..] => ("", "v1", rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return None,
    };
    let known = |plural: &str| resources::by_path(group, version, plural);
    let route = |rt: &'static ResourceType, ns: &str, name: &str, sub: &str| {
        Some(Ok(Route {
            rt,
            ns: ns.to_string(),
            name: name.to_string(),
            sub: sub.to_string(),
        }))
    };
    let namespaced = |p: &str| known(p).filter(|rt| rt.namespaced);
    let cluster = |p: &str| known(p).filter(|rt| !rt.namespaced);
    match rest {
        [plural] => known(plural).and_then(|rt| route(rt, "", "", "")),
        ["namespaces", ns, plural] if namespaced(plural).is_some() => {
            route(namespaced(plural)?, ns, "", "")
        }
        [plural, name] => cluster(plural).and_then(|rt| route(rt, "", name, "")),
        [plural, name, sub] => cluster(plural).and_then(|rt| route(rt, "", name, sub)),
        ["namespaces", ns, plural, name] => {
            namespaced(plural).and_then(|rt| route(rt, ns, name, ""))
        }
        ["namespaces", ns, plural, name, sub] => {
            namespaced(plural).and_then(|rt| route(rt, ns, name, sub))
        }
        _ => None,
    }
    .or(Some(Err(ApiError::no_route())))
}

fn is_watch(req: &Request) -> bool {
    matches!(req.query_param("watch"), Some("1") | Some("true"))
}

/// The Kubernetes verb of a request on a route.
pub fn verb_of(req: &Request, r: &Route) -> &'static str {
    match (req.method.as_str(), r.name.is_empty()) {
        ("GET", true) if is_watch(req) => "watch",
        ("GET", true) => "list",
        ("GET", false) => "get",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "deletecollection",
        ("DELETE", false) => "delete",
        _ => "unknown",
    }
}

fn error_response(e: &ApiError) -> Response {
    let mut r = Response::json(e.code, &e.to_status());
    if let Some(s) = e.retry_after {
        r = r.with_header("retry-after", &s.to_string());
    }
    r
}

fn parse_body(req: &Request) -> Result<Value, ApiError> {
    if req.body.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&req.body).map_err(|e| {
        ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}"))
    })
}

fn bearer(req: &Request) -> Option<&str> {
    let h = req.header("authorization")?;
    let (scheme, token) = h.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

impl Handler for Api {
    fn handle(&self, req: Request) -> Response {
        match req.path.as_str() {
            "/healthz" | "/readyz" | "/livez" => return Response::text(200, "ok"),
            "/version" => {
                return Response::json(
                    200,
                    &json!({"major": "1", "minor": "31", "gitVersion": "v1.31.0-acrpull-kit", "platform": "linux/amd64"}),
                )
            }
            _ => {}
        }
        if let Some(resp) = self.non_resource(&req) {
            return resp;
        }
        let mut entry = LoggedRequest {
            method: req.method.clone(),
            query: req.query.clone(),
            ..LoggedRequest::default()
        };
        let route = parse_route(&req.path);
        if let Some(Ok(r)) = &route {
            entry.verb = verb_of(&req, r).to_string();
            entry.group = r.rt.group.to_string();
            entry.resource = r.rt.plural.to_string();
            entry.subresource = r.sub.clone();
            entry.namespace = r.ns.clone();
            entry.name = r.name.clone();
        }
        let counted = entry.verb != "watch";
        if counted {
            self.0
                .in_flight
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        let resp = self.answer(&req, route, &mut entry);
        entry.code = resp.status;
        lock(&self.0.log).push(entry);
        if counted {
            self.0
                .in_flight
                .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        }
        resp
    }
}

impl Api {
    /// Discovery and the issuer's OIDC documents: any authenticated user may read them, as the
    /// default `system:discovery` and `system:service-account-issuer-discovery` roles allow.
    fn non_resource(&self, req: &Request) -> Option<Response> {
        let base = format!("https://{}", req.header("host").unwrap_or("127.0.0.1"));
        let doc = match req.path.as_str() {
            "/.well-known/openid-configuration" => Some(discovery::openid_configuration(&base)),
            "/openid/v1/jwks" => Some(self.0.signer.jwks()),
            p => {
                let st = self.0.store.lock();
                let installed = |rt: &ResourceType| st.installed(rt);
                discovery::document(p, &installed)
            }
        }?;
        let known = {
            let authz = lock(&self.0.authz);
            bearer(req).and_then(|t| authz.authenticate(t)).is_some()
        };
        if !known {
            return Some(error_response(&ApiError::unauthorized()));
        }
        Some(Response::json(200, &doc))
    }

    fn answer(
        &self,
        req: &Request,
        route: Option<Result<Route, ApiError>>,
        entry: &mut LoggedRequest,
    ) -> Response {
        let user = {
            let authz = lock(&self.0.authz);
            match bearer(req).and_then(|t| authz.authenticate(t)) {
                Some(u) => u.to_string(),
                None => return error_response(&ApiError::unauthorized()),
            }
        };
        entry.user = user.clone();
        let route = match route {
            None => return error_response(&ApiError::no_route()),
            Some(Err(e)) => return error_response(&e),
            Some(Ok(r)) => r,
        };
        let attrs = Attributes {
            verb: &entry.verb,
            group: route.rt.group,
            resource: route.rt.plural,
            subresource: &route.sub,
            namespace: &route.ns,
            name: &route.name,
        };
        if !lock(&self.0.authz).authorize(&user, &attrs) {
            return error_response(&ApiError::forbidden(
                route.rt.plural,
                route.rt.group,
                &route.sub,
                &route.name,
                &user,
                &entry.verb,
                &route.ns,
            ));
        }
        let verdict = lock(&self.0.faults).judge(entry);
        if verdict.latency > Duration::ZERO {
            std::thread::sleep(verdict.latency);
        }
        if let Some(mut e) = verdict.error {
            if e.code == 409 && !route.name.is_empty() {
                // An injected conflict reads like a real one, so clients parse it the same way.
                e = ApiError::conflict(route.rt, &route.name);
            }
            return error_response(&e);
        }
        let (installed, latency) = {
            let st = self.0.store.lock();
            (st.installed(route.rt), st.latency.for_verb(&entry.verb))
        };
        if !installed {
            return error_response(&ApiError::no_route());
        }
        // The simulated latency, slept outside the store lock before the request reads or
        // commits: concurrent requests overlap, and a write shows only once it has passed.
        if latency > Duration::ZERO {
            std::thread::sleep(latency);
        }
        match self.dispatch(req, &route, &entry.verb, &user) {
            Ok(resp) => resp,
            Err(e) => error_response(&e),
        }
    }

    fn dispatch(
        &self,
        req: &Request,
        r: &Route,
        verb: &str,
        user: &str,
    ) -> Result<Response, ApiError> {
        let sub = r.sub.as_str();
        let status = match (sub, r.rt.custom) {
            ("", _) => false,
            ("status", true) => true,
            ("token", false) if std::ptr::eq(r.rt, &resources::SERVICE_ACCOUNTS) => {
                if verb != "create" {
                    return Err(ApiError::method_not_allowed(&req.method));
                }
                return self.token_request(req, r, user);
            }
            _ => return Err(ApiError::no_route()),
        };
        if r.rt.namespaced && r.ns.is_empty() && !matches!(verb, "list" | "watch") {
            return Err(ApiError::no_route());
        }
        let store = &self.0.store;
        // Admission needs the acting user; set it for the duration of each locked write.
        let as_user = |f: &mut dyn FnMut(&mut super::store::State) -> Result<Value, ApiError>| {
            store.write(|st| {
                st.acting_user = user.to_string();
                let out = f(st);
                st.acting_user.clear();
                out
            })
        };
        match verb {
            "get" => {
                let st = store.lock();
                let obj = st
                    .get(r.rt, &r.ns, &r.name)
                    .ok_or_else(|| ApiError::not_found(r.rt, &r.name))?;
                Ok(Response::json(200, obj))
            }
            "list" => self.list(req, r),
            "watch" => self.watch(req, r),
            "create" if !status => {
                let body = parse_body(req)?;
                require_kind(req, r, &body)?;
                let mut body = Some(body);
                let obj = as_user(&mut |st| {
                    let b = body.take().unwrap_or(Value::Null);
                    st.create(r.rt, &r.ns, b)
                })?;
                Ok(Response::json(201, &obj))
            }
            "update" => {
                let body = parse_body(req)?;
                require_kind(req, r, &body)?;
                let obj = as_user(&mut |st| st.update(r.rt, &r.ns, &r.name, body.clone(), status))?;
                Ok(Response::json(200, &obj))
            }
            "patch" => {
                let ct = req.header("content-type").unwrap_or("");
                let ct = ct
                    .split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase();
                let kind = match ct.as_str() {
                    "application/merge-patch+json" => PatchType::Merge,
                    "application/json-patch+json" => PatchType::Json,
                    "application/strategic-merge-patch+json" => PatchType::Strategic,
                    // Server-side apply is not emulated: answered as an unknown format.
                    other => return Err(ApiError::unsupported_media_type(other)),
                };
                let body = parse_body(req)?;
                let obj = as_user(&mut |st| st.patch(r.rt, &r.ns, &r.name, kind, &body, status))?;
                Ok(Response::json(200, &obj))
            }
            "delete" if !status => {
                let body = parse_body(req)?;
                let pre = Preconditions {
                    uid: body["preconditions"]["uid"].as_str().map(str::to_string),
                    resource_version: body["preconditions"]["resourceVersion"]
                        .as_str()
                        .map(str::to_string),
                };
                let obj = store.write(|st| st.delete(r.rt, &r.ns, &r.name, &pre))?;
                let still_there = !obj["metadata"]["deletionTimestamp"].is_null()
                    && store.lock().get(r.rt, &r.ns, &r.name).is_some();
                if r.rt.custom || still_there {
                    return Ok(Response::json(200, &obj));
                }
                let mut details =
                    json!({"name": r.name, "kind": r.rt.plural, "uid": obj["metadata"]["uid"]});
                if !r.rt.group.is_empty() {
                    details["group"] = json!(r.rt.group);
                }
                Ok(Response::json(
                    200,
                    &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}),
                ))
            }
            "deletecollection" if !status => {
                let (labels, fields) = selectors(req)?;
                store.write(|st| {
                    let page = st.list(r.rt, Some(&r.ns), &labels, &fields, None, None)?;
                    for o in page.items {
                        let name = o["metadata"]["name"].as_str().unwrap_or("").to_string();
                        st.delete(r.rt, &r.ns, &name, &Preconditions::default())?;
                    }
                    Ok::<(), ApiError>(())
                })?;
                Ok(Response::json(
                    200,
                    &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}),
                ))
            }
            _ => Err(ApiError::method_not_allowed(&req.method)),
        }
    }

    fn list(&self, req: &Request, r: &Route) -> Result<Response, ApiError> {
        let (labels, fields) = selectors(req)?;
        let limit = match req.query_param("limit") {
            None | Some("") => None,
            Some(l) => Some(l.parse::<usize>().map_err(|_| {
                ApiError::bad_request(format!(
                    "limit: Invalid value: \"{l}\": must be a non-negative integer"
                ))
            })?),
        };
        let ns = (!r.ns.is_empty()).then_some(r.ns.as_str());
        let page = self.0.store.lock().list(
            r.rt,
            ns,
            &labels,
            &fields,
            limit,
            req.query_param("continue"),
        )?;
        let items: Vec<Value> = page
            .items
            .into_iter()
            .map(|mut o| {
                // Built-in list items come without kind/apiVersion; custom resources keep them.
                if !r.rt.custom {
                    if let Some(m) = o.as_object_mut() {
                        m.remove("kind");
                        m.remove("apiVersion");
                    }
                }
                o
            })
            .collect();
        let mut meta = json!({"resourceVersion": page.rv.to_string()});
        if let Some(c) = page.continue_token {
            meta["continue"] = json!(c);
            meta["remainingItemCount"] = json!(page.remaining);
        }
        // Built as a map, not with `json!`, which would copy every item once more.
        let mut list = serde_json::Map::new();
        list.insert("kind".into(), json!(format!("{}List", r.rt.kind)));
        list.insert("apiVersion".into(), json!(r.rt.api_version()));
        list.insert("metadata".into(), meta);
        list.insert("items".into(), Value::Array(items));
        Ok(Response::json(200, &Value::Object(list)))
    }

    fn watch(&self, req: &Request, r: &Route) -> Result<Response, ApiError> {
        let (labels, fields) = selectors(req)?;
        // `timeoutSeconds=0` means "the server's default", as for an absent parameter.
        let timeout = match req.query_param("timeoutSeconds") {
            None | Some("") | Some("0") => None,
            Some(t) => Some(Duration::from_secs(t.parse::<u64>().map_err(|_| {
                ApiError::bad_request(format!("timeoutSeconds: Invalid value: \"{t}\""))
            })?)),
        };
        let params = watch::Params {
            filter: watch::Filter {
                res: r.rt,
                ns: (!r.ns.is_empty()).then(|| r.ns.clone()),
                labels,
                fields,
            },
            resource_version: req.query_param("resourceVersion").map(str::to_string),
            timeout,
            bookmarks: req.query_param("allowWatchBookmarks") == Some("true"),
            send_initial_events: req.query_param("sendInitialEvents") == Some("true"),
        };
        let body = watch::start(self.0.store.clone(), params)?;
        Ok(Response {
            status: 200,
            headers: vec![("content-type".into(), "application/json".into())],
            body,
        })
    }

    fn token_request(&self, req: &Request, r: &Route, user: &str) -> Result<Response, ApiError> {
        let body = parse_body(req)?;
        let policies = self.0.store.lock().policies.clone();
        if let Some(p) = policies {
            p.token_request(user, &r.ns, &r.name, &body)?;
        }
        let (out, record) =
            token::request(&self.0.store.lock(), &self.0.signer, &r.ns, &r.name, &body)?;
        lock(&self.0.tokens).push(record);
        Ok(Response::json(201, &out))
    }
}

/// A custom resource's body is decoded as unstructured JSON, which needs its own `kind` (400
/// otherwise, as the real server answers); built-in types take theirs from the path. (The
/// unstructured decoder does not require `apiVersion` yet: kubernetes issue 109023.)
fn require_kind(req: &Request, r: &Route, body: &Value) -> Result<(), ApiError> {
    if !r.rt.custom || !body.is_object() || body["kind"].as_str().is_some_and(|k| !k.is_empty()) {
        return Ok(());
    }
    Err(ApiError::bad_request(format!(
        "Object 'Kind' is missing in '{}'",
        String::from_utf8_lossy(&req.body)
    )))
}

fn selectors(req: &Request) -> Result<(LabelSelector, FieldSelector), ApiError> {
    let labels = LabelSelector::parse(req.query_param("labelSelector").unwrap_or(""))
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let fields = FieldSelector::parse(req.query_param("fieldSelector").unwrap_or(""))
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok((labels, fields))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_routes() {
        let r = parse_route("/api/v1/namespaces/ns/secrets/x")
            .unwrap()
            .unwrap();
        assert_eq!(
            (r.rt.plural, r.ns.as_str(), r.name.as_str()),
            ("secrets", "ns", "x")
        );
        let r = parse_route(
            "/apis/acrpull.microsoft.com/v1beta2/namespaces/ns/acrpullbindings/b/status",
        )
        .unwrap()
        .unwrap();
        assert_eq!((r.rt.version, r.sub.as_str()), ("v1beta2", "status"));
        let r = parse_route("/api/v1/namespaces/ns").unwrap().unwrap();
        assert_eq!((r.rt.plural, r.name.as_str()), ("namespaces", "ns"));
        let r = parse_route("/apis/msi-acrpull.microsoft.com/v1beta1/acrpullbindings")
            .unwrap()
            .unwrap();
        assert_eq!((r.rt.version, r.ns.as_str()), ("v1beta1", ""));
        assert!(parse_route("/api/v1/pods").unwrap().is_err());
        assert!(parse_route("/api/v1/namespaces/ns/configmaps/x")
            .unwrap()
            .is_err());
        assert!(parse_route("/metrics").is_none());
    }

    #[test]
    fn verbs_follow_method_name_and_watch() {
        let r = parse_route("/api/v1/secrets").unwrap().unwrap();
        assert_eq!(
            verb_of(&Request::new("GET", "/api/v1/secrets?watch=1"), &r),
            "watch"
        );
        assert_eq!(verb_of(&Request::new("GET", "/api/v1/secrets"), &r), "list");
        let r = parse_route("/api/v1/namespaces/n/secrets/x")
            .unwrap()
            .unwrap();
        assert_eq!(verb_of(&Request::new("DELETE", "/"), &r), "delete");
        assert_eq!(verb_of(&Request::new("PATCH", "/"), &r), "patch");
    }
}
