//! Compiling `[[routes]]`: matching, environment source, role rules, rewrites, cost.

use std::collections::HashMap;

use super::compile::{boxed, template, FROM_TOKEN};
use crate::auth::safe_value;
use crate::auth::source::TokenSources;
use crate::bind::{EnvId, RouteEnvironment};
use crate::config::{file, ConfigError};
use crate::cors::Cors;
use crate::policy::RoutePolicy;
use crate::routing::{normalize_host, Route, RouteTable};
use crate::websocket;

pub(super) fn routes(
    raw: &[file::Route],
    limits: &file::Limits,
    find_env: &dyn Fn(&str) -> Option<EnvId>,
    can_inherit: bool,
    errors: &mut Vec<ConfigError>,
) -> RouteTable {
    if raw.is_empty() {
        errors.push(ConfigError::at(
            0..0,
            "routes",
            "no route is configured, so every request would get 404",
            "add a [[routes]] entry, e.g. name = \"all\", path_prefix = \"/\"",
        ));
    }
    let mut names = HashMap::new();
    let mut routes = Vec::new();
    for (i, r) in raw.iter().enumerate() {
        let key = format!("routes[{i}]");
        if let Some(first) = names.insert(r.name.get_ref().as_str(), i) {
            errors.push(ConfigError::at(
                r.name.span(),
                format!("{key}.name"),
                format!("route name `{}` is already used by routes[{first}]", r.name.get_ref()),
                "give each route its own name",
            ));
        }
        if !safe_value(r.name.get_ref()) {
            errors.push(ConfigError::at(
                r.name.span(),
                format!("{key}.name"),
                "route names must be visible ASCII without spaces",
                "rename the route",
            ));
        }
        if !r.path_prefix.get_ref().starts_with('/') {
            errors.push(ConfigError::at(
                r.path_prefix.span(),
                format!("{key}.path_prefix"),
                format!("`{}` does not start with `/`", r.path_prefix.get_ref()),
                "write an absolute path prefix such as \"/api\"",
            ));
        }
        let mut hosts = Vec::new();
        for (j, h) in r.hosts.iter().enumerate() {
            match normalize_host(h.get_ref()) {
                Some(n) => hosts.push(Box::from(n.as_ref())),
                None => errors.push(ConfigError::at(
                    h.span(),
                    format!("{key}.hosts[{j}]"),
                    format!("`{}` is not a host name", h.get_ref()),
                    "write a bare host name such as `api.example.com`",
                )),
            }
        }
        let environment = match &r.environment {
            Some(e) if e.get_ref() == FROM_TOKEN => RouteEnvironment::FromToken,
            Some(e) => find_env(e.get_ref()).map_or_else(
                || {
                    errors.push(ConfigError::at(
                        e.span(),
                        format!("{key}.environment"),
                        format!("environment `{}` is not defined", e.get_ref()),
                        "name a defined environment, or write \"from_token\"",
                    ));
                    RouteEnvironment::Inherit
                },
                RouteEnvironment::Fixed,
            ),
            None => {
                if !can_inherit {
                    errors.push(ConfigError::at(
                        r.name.span(),
                        format!("{key}.environment"),
                        "the route names no environment, and no host or listener binds one",
                        "set environment = \"NAME\" or \"from_token\", or bind hosts/listeners to environments",
                    ));
                }
                RouteEnvironment::Inherit
            }
        };
        let policy = RoutePolicy {
            roles_any: boxed(&r.roles_any),
            roles_all: boxed(&r.roles_all),
            roles_by_env: r
                .roles_by_environment
                .iter()
                .filter_map(|(env, roles)| find_env(env.get_ref()).map(|id| (id, boxed(roles))))
                .collect(),
            critical: r.critical,
        };
        routes.push(Route {
            name: r.name.get_ref().as_str().into(),
            hosts: hosts.into(),
            path_prefix: r.path_prefix.get_ref().as_str().into(),
            environment,
            forward_authorization: r.forward_authorization,
            policy,
            rewrite_prefix: template(r.rewrite_prefix.as_ref(), &format!("{key}.rewrite_prefix"), false, errors),
            rewrite_host: template(r.rewrite_host.as_ref(), &format!("{key}.rewrite_host"), false, errors),
            cost: r.cost,
            path_parameters: r.path_parameters == file::PathParameters::Allow,
            max_body_bytes: body_limit(r, &key, limits, errors),
            token_sources: r
                .token_sources
                .as_ref()
                .map(|raw| TokenSources::compile(raw, &format!("{key}.token_sources"), errors)),
            forward_token_cookie: r.forward_token_cookie,
            websocket: websocket::Limits::compile(
                &r.websocket_idle_timeout_seconds,
                &r.websocket_max_lifetime_seconds,
                &key,
                errors,
            ),
            cors: r.cors.as_ref().map(|c| Box::new(Cors::compile(c, &format!("{key}.cors"), errors))),
        });
    }
    RouteTable::new(routes)
}

fn body_limit(r: &file::Route, key: &str, limits: &file::Limits, errors: &mut Vec<ConfigError>) -> u64 {
    match &r.max_body_bytes {
        Some(max) if *max.get_ref() == 0 => {
            errors.push(ConfigError::at(
                max.span(),
                format!("{key}.max_body_bytes"),
                "a route cannot allow no body at all this way",
                "set the largest body the route accepts, in bytes (e.g. 1048576)",
            ));
            0
        }
        Some(max) => *max.get_ref(),
        None => limits.max_body_bytes,
    }
}
