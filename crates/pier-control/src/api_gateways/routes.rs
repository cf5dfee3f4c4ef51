//! Gateways as routes: each gateway's host (`NAME-HASH.DOMAIN`, the gateway kind's own hash) gets a route
//! whose admission filter is the usual guard (public gateways: anyone), then the config compiled into an
//! [`ApiFilter`] and a preflight responder, and a dispatching backend; errors in ESPv2's JSON.
//!
//! Backends at a host Pier serves are called through that host's own route, with an ID token of the
//! config's service account (minted here, cached in the filter): a private service behind an API stays
//! private, reachable by the gateway only when the account holds the invoker role on it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use http::HeaderValue;
use pier_apigateway::spec::BackendRule;
use pier_apigateway::{
    ApiFilter, BackendTokens, Context, JwksFetch, JwksRegistry, JwksSource, KeyDirectory, KeyEntry,
    PreflightResponder, QuotaBook,
};
use pier_gateway::dispatch::Forwarded;
use pier_gateway::upstream::RequestBody;
use pier_gateway::{Access, Backend, ErrorStyle, ExternalForward, Route, Target};
use pier_identity::tokens::CLI_CLIENT_ID;
use pier_identity::{InvokerSet, Principal};
use pier_model::{HostKind, ProjectName, ServiceName};
use pier_store::{ApiConfigRecord, ApiKeyRecord, GatewayRecord};

use crate::claims::Claims;
use crate::{IdentityService, Platform, Resource};

/// The gateway's service account's ID tokens.
struct AccountTokens {
    identity: Arc<IdentityService>,
    account: Principal,
}

impl BackendTokens for AccountTokens {
    fn id_token(&self, audience: &str) -> Result<String, String> {
        self.identity
            .mint_identity_token(&self.account, audience, None)
            .map_err(|e| e.to_string())
    }
}

/// Where external backends go when the server gave no client.
struct NoExternal;

impl ExternalForward for NoExternal {
    fn forward(&self, _: http::Request<RequestBody>) -> Forwarded {
        Box::pin(async {
            Err(pier_gateway::error::ProxyError::Unavailable(
                "this server does not forward to backends outside Pier".into(),
            ))
        })
    }
}

/// Fetches nothing: JWT schemes accept no token (a control plane built without the server's client).
pub(crate) struct NoFetch;

impl JwksFetch for NoFetch {
    fn fetch(&self, source: &JwksSource) -> pier_apigateway::jwt::Fetched {
        let issuer = source.issuer.clone();
        Box::pin(async move { Err(format!("no HTTP client to fetch the keys of {issuer}")) })
    }
}

/// What gateway routes are built from, read with the rest of the routes.
pub(crate) struct GatewayRecords {
    pub gateways: Vec<GatewayRecord>,
    pub configs: Vec<ApiConfigRecord>,
    pub keys: Vec<ApiKeyRecord>,
}

impl Platform {
    /// A service's end-user token check (`--end-user-auth`); `audiences` are the service's own, accepted
    /// when the setting names none.
    pub(crate) fn end_user_filter(
        &self,
        e: &pier_model::end_user_auth::EndUserAuth,
        audiences: &[String],
    ) -> Arc<dyn pier_gateway::Filter> {
        let jwks = self.jwks_registry().get(&JwksSource {
            issuer: e.issuer.clone(),
            jwks_uri: e.jwks_uri.clone(),
        });
        let scheme = pier_apigateway::spec::JwtScheme {
            issuer: e.issuer.clone(),
            jwks_uri: e.jwks_uri.clone(),
            audiences: e.audiences.clone(),
            locations: pier_apigateway::spec::default_jwt_locations(),
        };
        let own: Vec<String> = audiences
            .iter()
            .filter(|a| *a != CLI_CLIENT_ID)
            .cloned()
            .collect();
        let verifier = pier_apigateway::jwt::JwtVerifier::new(&scheme, &own, jwks);
        Arc::new(pier_apigateway::EndUserFilter::new(
            verifier, &e.issuer, e.optional,
        ))
    }

    pub(crate) fn jwks_registry(&self) -> Arc<JwksRegistry> {
        self.api_gateways
            .jwks
            .clone()
            .unwrap_or_else(|| self.fallback_jwks.clone())
    }

    /// Claims every gateway's host in `table`. A backend at one of Pier's own names (under its domain, or
    /// a mapped domain in `mapped`) is called through that name's route, never through the external
    /// client, so a gateway cannot reach another gateway (or itself) by address: the dispatcher allows one
    /// hop. Returns the routes by (project, gateway), for mapped domains.
    pub(crate) fn claim_gateways(
        &self,
        table: &mut Claims,
        records: &GatewayRecords,
        hashes: &HashMap<ProjectName, String>,
        mapped: &HashSet<String>,
    ) -> HashMap<(ProjectName, String), Arc<Route>> {
        let mut out = HashMap::new();
        if records.gateways.is_empty() {
            return out;
        }
        let keys = Arc::new(KeyDirectory::new(
            records
                .keys
                .iter()
                .filter(|k| k.deleted_at.is_none())
                .map(|k| {
                    (
                        k.prefix.clone(),
                        KeyEntry {
                            uid: k.uid.clone(),
                            project: k.project.to_string(),
                            digest: k.digest.clone(),
                            api_targets: k.api_targets.clone(),
                        },
                    )
                }),
        ));
        let jwks = self.jwks_registry();
        let external: Arc<dyn ExternalForward> = self
            .api_gateways
            .external
            .clone()
            .unwrap_or_else(|| Arc::new(NoExternal));
        let resolve = |rule: &BackendRule| -> Target {
            let host = pier_model::hosts::normalize_host(&rule.authority)
                .map(|h| h.into_owned())
                .unwrap_or_default();
            let ours =
                pier_model::hosts::is_within(&host, self.scheme.domain()) || mapped.contains(&host);
            match HeaderValue::from_str(&rule.authority) {
                Ok(v) if ours => Target::Pier(v),
                _ => Target::External(external.clone()),
            }
        };
        let directory = self.identity.directory();
        let mut live = HashSet::new();
        for g in &records.gateways {
            let Some(hash) = hashes.get(&g.project) else {
                continue;
            };
            let Ok(name) = g.name.parse::<ServiceName>() else {
                continue;
            };
            let host = self.scheme.host(HostKind::Gateway, &g.name, hash);
            let url = self.scheme.url(&host);
            let mut passthrough = Vec::new();
            let mut audiences = vec![
                url.clone(),
                format!("{url}/"),
                format!("https://{host}"),
                format!("https://{host}/"),
            ];
            let config = records
                .configs
                .iter()
                .find(|c| c.project == g.project && c.api == g.api && c.name == g.config);
            let quota = {
                let mut books = self.quota_books.lock().unwrap_or_else(|p| p.into_inner());
                live.insert((g.project.to_string(), g.name.clone()));
                books
                    .entry((g.project.to_string(), g.name.clone()))
                    .or_insert_with(|| Arc::new(QuotaBook::default()))
                    .clone()
            };
            let compiled = config
                .ok_or_else(|| format!("config {} of API {} is gone", g.config, g.api))
                .and_then(|c| {
                    let spec = self.parsed_spec(c).map_err(|e| e.to_string())?;
                    passthrough = spec.jwt_audiences();
                    let cx = Context {
                        project: g.project.to_string(),
                        api: g.api.clone(),
                        keys: keys.clone(),
                        quota,
                        jwks: &jwks,
                        default_audiences: audiences.clone(),
                        tokens: Some(Arc::new(AccountTokens {
                            identity: self.identity.clone(),
                            account: Principal::ServiceAccount(c.service_account.clone()),
                        })),
                        cors: g
                            .cors
                            .as_deref()
                            .and_then(|c| serde_json::from_str(c).ok())
                            .map(|c| super::cors_policy(&c)),
                        resolve: &resolve,
                    };
                    ApiFilter::new(spec, cx).map_err(|e| e.to_string())
                });
            audiences.push(CLI_CLIENT_ID.to_owned());
            let invokers = if g.public {
                InvokerSet {
                    all_users: true,
                    ..InvokerSet::default()
                }
            } else {
                InvokerSet::from_policies(
                    &directory.policies_for(&Resource::Project(g.project.clone())),
                )
            };
            let access = Arc::new(Access {
                ingress: pier_model::Ingress::All,
                invoker_check: true,
                invokers,
                audiences,
                passthrough,
            });
            let route = match compiled {
                Ok(filter) => Route::new(
                    g.project.clone(),
                    name,
                    None,
                    access,
                    self.admission.clone(),
                    Backend::Dispatch,
                )
                .with_filter(Arc::new(filter))
                .with_responder(Arc::new(PreflightResponder)),
                Err(why) => {
                    tracing::error!(gateway = %g.name, "cannot serve the gateway: {why}");
                    Route::new(
                        g.project.clone(),
                        name,
                        None,
                        access,
                        self.admission.clone(),
                        Backend::Unavailable(format!(
                            "gateway {} cannot serve its config; its operator finds why in the server's log",
                            g.name
                        )),
                    )
                }
            }
            .with_errors(ErrorStyle::Json);
            let route = Arc::new(route);
            out.insert((g.project.clone(), g.name.clone()), route.clone());
            table.claim(host, route, &self.admission);
        }
        self.quota_books
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|k, _| live.contains(k));
        out
    }
}
