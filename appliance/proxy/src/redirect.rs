//! `Location` building for RequestRedirect, with the spec's port rules.

use gatehouse_model::Redirect;

use crate::filters::modify_path;
use crate::matching::PathMatcher;

/// What a redirect needs to know about the request it answers.
#[derive(Debug)]
pub(crate) struct RedirectInput<'a> {
    /// Scheme the client used (`http` / `https`, from the listener protocol).
    pub scheme: &'a str,
    /// Request hostname without port.
    pub host: &'a str,
    /// Port of the listener that accepted the request.
    pub listener_port: u16,
    pub path: &'a str,
    pub query: Option<&'a str>,
    /// The rule's match that selected the request, for `ReplacePrefixMatch`.
    pub matched: &'a PathMatcher,
}

fn well_known_port(scheme: &str) -> Option<u16> {
    match scheme {
        s if s.eq_ignore_ascii_case("http") => Some(80),
        s if s.eq_ignore_ascii_case("https") => Some(443),
        _ => None,
    }
}

/// Builds the absolute `Location` of a redirect.
///
/// Port: an explicit port wins; otherwise a configured scheme implies its well-known port
/// (listener port when it has none); otherwise the listener's port. The port is left out when
/// it is the well-known port of the resulting scheme, so `http→https` yields `https://host/…`
/// and never points back at the plain-text listener.
pub(crate) fn location(redirect: &Redirect, input: &RedirectInput<'_>) -> String {
    let scheme = redirect.scheme.as_deref().unwrap_or(input.scheme).to_ascii_lowercase();
    let host = redirect.hostname.as_deref().unwrap_or(input.host);
    let port = match (redirect.port, &redirect.scheme) {
        (Some(port), _) => port,
        (None, Some(s)) => well_known_port(s).unwrap_or(input.listener_port),
        (None, None) => input.listener_port,
    };
    let path = match &redirect.path {
        Some(m) => modify_path(m, input.matched, input.path),
        None => input.path.to_owned(),
    };
    let mut out = format!("{scheme}://{host}");
    if well_known_port(&scheme) != Some(port) {
        out.push(':');
        out.push_str(&port.to_string());
    }
    out.push_str(&path);
    if let Some(q) = input.query {
        out.push('?');
        out.push_str(q);
    }
    out
}

#[cfg(test)]
mod tests {
    use gatehouse_model::PathModifier;

    use super::*;

    fn redirect() -> Redirect {
        Redirect { scheme: None, hostname: None, path: None, port: None, status: 302 }
    }

    fn input<'a>(scheme: &'a str, port: u16, matched: &'a PathMatcher) -> RedirectInput<'a> {
        RedirectInput {
            scheme,
            host: "example.com",
            listener_port: port,
            path: "/a/b",
            query: Some("x=1"),
            matched,
        }
    }

    #[test]
    fn http_to_https_uses_443_and_omits_it() {
        let m = PathMatcher::Prefix(String::new());
        let r = Redirect { scheme: Some("https".into()), ..redirect() };
        assert_eq!(location(&r, &input("http", 80, &m)), "https://example.com/a/b?x=1");
        // Listener on a non-standard port still redirects to 443, never back to itself.
        assert_eq!(location(&r, &input("http", 8080, &m)), "https://example.com/a/b?x=1");
    }

    #[test]
    fn explicit_port_is_kept_unless_well_known() {
        let m = PathMatcher::Prefix(String::new());
        let r = Redirect { scheme: Some("https".into()), port: Some(8443), ..redirect() };
        assert_eq!(location(&r, &input("http", 80, &m)), "https://example.com:8443/a/b?x=1");
        let r = Redirect { scheme: Some("https".into()), port: Some(443), ..redirect() };
        assert_eq!(location(&r, &input("http", 80, &m)), "https://example.com/a/b?x=1");
        let r = Redirect { port: Some(80), ..redirect() };
        assert_eq!(location(&r, &input("https", 443, &m)), "https://example.com:80/a/b?x=1");
    }

    #[test]
    fn no_scheme_no_port_uses_listener_port() {
        let m = PathMatcher::Prefix(String::new());
        let r = Redirect { hostname: Some("other.example".into()), ..redirect() };
        assert_eq!(location(&r, &input("http", 8080, &m)), "http://other.example:8080/a/b?x=1");
        assert_eq!(location(&r, &input("http", 80, &m)), "http://other.example/a/b?x=1");
        assert_eq!(location(&r, &input("https", 443, &m)), "https://other.example/a/b?x=1");
        let r = Redirect { scheme: Some("http".into()), ..redirect() };
        assert_eq!(location(&r, &input("https", 8443, &m)), "http://example.com/a/b?x=1");
    }

    #[test]
    fn path_modifiers() {
        let m = PathMatcher::Prefix("/a".into());
        let r =
            Redirect { path: Some(PathModifier::ReplacePrefixMatch("/z".into())), ..redirect() };
        assert_eq!(location(&r, &input("http", 80, &m)), "http://example.com/z/b?x=1");
        let r =
            Redirect { path: Some(PathModifier::ReplaceFullPath("/full".into())), ..redirect() };
        assert_eq!(location(&r, &input("http", 80, &m)), "http://example.com/full?x=1");
    }
}
