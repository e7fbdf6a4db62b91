use std::net::SocketAddr;

use gatehouse_model::{
    Certificate, Desired, HeaderMatch, HttpMatch, ListenerProblemKind, ListenerTls, QueryMatch,
    StringMatch,
};
use http::{HeaderMap, Method};

use super::*;
use crate::fixtures::*;
use crate::matching::RequestView;

fn desired(listeners: Vec<gatehouse_model::Listener>, routes: Vec<HttpRoute>) -> Desired {
    Desired {
        generation: 7,
        listeners,
        http_routes: routes.into_iter().map(Arc::new).collect(),
        ..Desired::default()
    }
}

struct Req<'a> {
    host: &'a str,
    path: &'a str,
    query: Option<&'a str>,
    method: Method,
    headers: HeaderMap,
}

fn req<'a>(host: &'a str, path: &'a str) -> Req<'a> {
    Req { host, path, query: None, method: Method::GET, headers: HeaderMap::new() }
}

/// Which listener and backend serve the request on `port`; `None` = 404.
fn serve(table: &RouteTable, port: u16, r: &Req<'_>) -> Option<(String, String)> {
    let socket = table.sockets.get(&SocketAddr::new(LOCALHOST, port))?;
    let listener = socket.listener_for(r.host)?;
    let view = RequestView { path: r.path, query: r.query, method: &r.method, headers: &r.headers };
    let entry = listener.route(r.host, &view)?;
    let backend = entry.rule().backends[0].target.name().to_owned();
    Some((listener.id.name.clone(), backend))
}

fn backend_of(table: &RouteTable, port: u16, r: &Req<'_>) -> Option<String> {
    serve(table, port, r).map(|(_, b)| b)
}

#[test]
fn protocol_and_hostname_conflicts_hit_the_later_listener() {
    let a = http_listener("gw", "a", 80, Some("a.example.com"));
    let b = https_listener("gw", "b", 80, Some("b.example.com"), &["b.example.com"]);
    let c = http_listener("gw", "c", 80, Some("a.example.com"));
    let d = http_listener("gw", "d", 80, None);
    let (table, problems) =
        compile(&desired(vec![d.clone(), c.clone(), b.clone(), a.clone()], vec![]));
    let kinds: Vec<_> = problems.iter().map(|p| (p.listener.name.as_str(), p.kind)).collect();
    assert_eq!(
        kinds,
        [
            ("b", ListenerProblemKind::ProtocolConflict),
            ("c", ListenerProblemKind::HostnameConflict)
        ]
    );
    let socket = &table.sockets[&SocketAddr::new(LOCALHOST, 80)];
    let names: Vec<_> = socket.listeners.iter().map(|l| l.id.name.as_str()).collect();
    assert_eq!(names, ["a", "d"]);
    assert_eq!(table.problems(), problems.as_slice());
}

#[test]
fn invalid_certificates_are_reported_and_listener_dropped() {
    let mut l = https_listener("gw", "tls", 443, None, &["a.example.com"]);
    l.tls = Some(ListenerTls {
        certificates: vec![Certificate {
            source: "Secret default/broken".into(),
            chain_pem: "-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n".into(),
            key_pem: String::new(),
        }],
    });
    let mut no_tls = https_listener("gw", "none", 8443, None, &["a.example.com"]);
    no_tls.tls = None;
    let (table, problems) = compile(&desired(vec![l, no_tls], vec![]));
    assert_eq!(problems.len(), 2);
    assert!(problems.iter().all(|p| p.kind == ListenerProblemKind::InvalidCertificate));
    assert!(problems[1].message.contains("Secret default/broken"), "{}", problems[1].message);
    assert!(table.sockets.is_empty());
}

#[test]
fn listener_isolation_picks_most_specific_listener() {
    let exact = http_listener("gw", "exact", 80, Some("foo.example.com"));
    let wild = http_listener("gw", "wild", 80, Some("*.example.com"));
    let deeper = http_listener("gw", "deeper", 80, Some("*.a.example.com"));
    let routes = vec![
        route("r-exact", &[&exact], &[], vec![rule(vec![], "exact-be")]),
        route("r-wild", &[&wild], &[], vec![rule(vec![prefix("/only")], "wild-be")]),
        route("r-deeper", &[&deeper], &[], vec![rule(vec![], "deeper-be")]),
    ];
    let (table, problems) = compile(&desired(vec![wild, exact, deeper], routes));
    assert!(problems.is_empty());
    assert_eq!(backend_of(&table, 80, &req("foo.example.com", "/x")).as_deref(), Some("exact-be"));
    assert_eq!(backend_of(&table, 80, &req("x.a.example.com", "/x")).as_deref(), Some("deeper-be"));
    assert_eq!(
        backend_of(&table, 80, &req("bar.example.com", "/only")).as_deref(),
        Some("wild-be")
    );
    // The wildcard listener's route does not match `/x`; isolation forbids other listeners.
    assert_eq!(backend_of(&table, 80, &req("bar.example.com", "/x")), None);
    assert_eq!(backend_of(&table, 80, &req("other.org", "/")), None);
}

#[test]
fn catch_all_listener_takes_unmatched_hosts() {
    let exact = http_listener("gw", "exact", 80, Some("foo.example.com"));
    let any = http_listener("gw", "any", 80, None);
    let routes = vec![
        route("r-exact", &[&exact], &[], vec![rule(vec![], "exact-be")]),
        route("r-any", &[&any], &[], vec![rule(vec![], "any-be")]),
    ];
    let (table, _) = compile(&desired(vec![exact, any], routes));
    assert_eq!(serve(&table, 80, &req("foo.example.com", "/")).unwrap().0, "exact");
    assert_eq!(serve(&table, 80, &req("other.org", "/")).unwrap().0, "any");
    assert_eq!(serve(&table, 80, &req("", "/")).unwrap().0, "any");
}

#[test]
fn route_hostnames_intersect_listener_hostname() {
    let l = http_listener("gw", "wild", 80, Some("*.example.com"));
    let routes = vec![
        route(
            "r",
            &[&l],
            &["a.example.com", "other.org", "*.b.example.com"],
            vec![rule(vec![], "be")],
        ),
        route("elsewhere", &[&l], &["other.org"], vec![rule(vec![], "never")]),
    ];
    let (table, _) = compile(&desired(vec![l], routes));
    assert_eq!(backend_of(&table, 80, &req("a.example.com", "/")).as_deref(), Some("be"));
    assert_eq!(backend_of(&table, 80, &req("x.b.example.com", "/")).as_deref(), Some("be"));
    assert_eq!(backend_of(&table, 80, &req("c.example.com", "/")), None);
    assert_eq!(backend_of(&table, 80, &req("other.org", "/")), None);
}

#[test]
fn most_specific_route_hostname_wins_without_fallthrough() {
    let l = http_listener("gw", "any", 80, None);
    let routes = vec![
        route("wild", &[&l], &["*.example.com"], vec![rule(vec![], "wild-be")]),
        route("deeper", &[&l], &["*.a.example.com"], vec![rule(vec![], "deeper-be")]),
        route("exact", &[&l], &["a.example.com"], vec![rule(vec![prefix("/x")], "exact-be")]),
        route("none", &[&l], &[], vec![rule(vec![], "none-be")]),
    ];
    let (table, _) = compile(&desired(vec![l], routes));
    assert_eq!(backend_of(&table, 80, &req("a.example.com", "/x")).as_deref(), Some("exact-be"));
    assert_eq!(backend_of(&table, 80, &req("a.example.com", "/y")), None);
    assert_eq!(backend_of(&table, 80, &req("b.a.example.com", "/")).as_deref(), Some("deeper-be"));
    assert_eq!(backend_of(&table, 80, &req("b.example.com", "/")).as_deref(), Some("wild-be"));
    assert_eq!(backend_of(&table, 80, &req("example.com", "/")).as_deref(), Some("none-be"));
}

#[test]
fn match_precedence_across_rules_and_routes() {
    let l = http_listener("gw", "any", 80, None);
    let with_method = HttpMatch { method: Some("POST".into()), ..prefix("/p") };
    let header = |n: &str| HeaderMatch { name: n.into(), value: StringMatch::Exact("1".into()) };
    let one_header = HttpMatch { headers: vec![header("a")], ..prefix("/p") };
    let two_headers = HttpMatch { headers: vec![header("a"), header("b")], ..prefix("/p") };
    let query = HttpMatch {
        headers: vec![header("a")],
        query: vec![QueryMatch { name: "q".into(), value: StringMatch::Exact("1".into()) }],
        ..prefix("/p")
    };
    let routes = vec![
        route(
            "z-prefix",
            &[&l],
            &[],
            vec![rule(vec![prefix("/")], "root"), rule(vec![prefix("/a")], "a")],
        ),
        route("y-regex", &[&l], &[], vec![rule(vec![regex("/a/.*")], "regex")]),
        route("x-exact", &[&l], &[], vec![rule(vec![exact("/a/b")], "exact")]),
        route("w-long", &[&l], &[], vec![rule(vec![prefix("/a/c")], "long")]),
        route(
            "v-mixed",
            &[&l],
            &[],
            vec![
                rule(vec![prefix("/p")], "plain"),
                rule(vec![one_header], "one-header"),
                rule(vec![two_headers], "two-headers"),
                rule(vec![query], "query"),
                rule(vec![with_method], "method"),
            ],
        ),
    ];
    let (table, _) = compile(&desired(vec![l], routes));
    let b = |r: Req<'_>| backend_of(&table, 80, &r);
    assert_eq!(b(req("h", "/a/b")).as_deref(), Some("exact"));
    assert_eq!(b(req("h", "/a/c")).as_deref(), Some("regex"), "regex outranks prefix");
    assert_eq!(b(req("h", "/a")).as_deref(), Some("a"));
    assert_eq!(b(req("h", "/other")).as_deref(), Some("root"));

    let mut headers = HeaderMap::new();
    headers.insert("a", "1".parse().unwrap());
    headers.insert("b", "1".parse().unwrap());
    let full = |method: Method, query: Option<&'static str>| Req {
        host: "h",
        path: "/p",
        query,
        method,
        headers: headers.clone(),
    };
    assert_eq!(b(full(Method::POST, Some("q=1"))).as_deref(), Some("method"));
    assert_eq!(b(full(Method::GET, Some("q=1"))).as_deref(), Some("two-headers"));
    let mut one = full(Method::GET, Some("q=1"));
    one.headers.remove("b");
    assert_eq!(b(one).as_deref(), Some("query"));
    let mut one = full(Method::GET, None);
    one.headers.remove("b");
    assert_eq!(b(one).as_deref(), Some("one-header"));
    assert_eq!(b(req("h", "/p")).as_deref(), Some("plain"));
}

#[test]
fn ties_go_to_oldest_then_namespace_name_then_rule_order() {
    let l = http_listener("gw", "any", 80, None);
    let mut old = route("b-old", &[&l], &[], vec![rule(vec![prefix("/")], "old")]);
    old.created = Some(100);
    let mut newer = route("a-new", &[&l], &[], vec![rule(vec![prefix("/")], "new")]);
    newer.created = Some(200);
    let untimed = route("0-untimed", &[&l], &[], vec![rule(vec![prefix("/")], "untimed")]);
    let (table, _) = compile(&desired(vec![l.clone()], vec![untimed.clone(), newer, old]));
    assert_eq!(backend_of(&table, 80, &req("h", "/")).as_deref(), Some("old"));

    let second = route("b", &[&l], &[], vec![rule(vec![prefix("/")], "b")]);
    let first =
        route("a", &[&l], &[], vec![rule(vec![prefix("/")], "a1"), rule(vec![prefix("/")], "a2")]);
    let (table, _) =
        compile(&desired(vec![l.clone()], vec![second.clone(), untimed, first.clone()]));
    assert_eq!(backend_of(&table, 80, &req("h", "/")).as_deref(), Some("untimed"));
    let (table, _) = compile(&desired(vec![l], vec![second, first]));
    assert_eq!(backend_of(&table, 80, &req("h", "/")).as_deref(), Some("a1"));
}

#[test]
fn empty_matches_mean_prefix_root_and_bad_regex_never_matches() {
    let l = http_listener("gw", "any", 80, None);
    let routes = vec![
        route("bad", &[&l], &[], vec![rule(vec![regex("(")], "bad")]),
        route("good", &[&l], &[], vec![rule(vec![], "good")]),
    ];
    let (table, _) = compile(&desired(vec![l], routes));
    assert_eq!(backend_of(&table, 80, &req("h", "/(")).as_deref(), Some("good"));
}

#[test]
fn describe_lists_sockets_hosts_and_matches() {
    let l = https_listener("gw", "tls", 443, Some("*.example.com"), &["*.example.com"]);
    let routes = vec![route("r", &[&l], &["a.example.com"], vec![rule(vec![], "be")])];
    let (table, _) = compile(&desired(vec![l], routes));
    let v = table.describe();
    assert_eq!(v["generation"], 7);
    let listener = &v["sockets"][0]["listeners"][0];
    assert_eq!(v["sockets"][0]["address"], "127.0.0.1:443");
    assert_eq!(listener["certificates"][0]["names"][0], "*.example.com");
    assert_eq!(listener["hosts"][0]["hostname"], "a.example.com");
    assert_eq!(listener["hosts"][0]["matches"][0]["route"], "HTTPRoute default/r");
    assert!(!v.to_string().contains("PRIVATE KEY"));
}

/// A small deterministic generator (xorshift) for the edit sequences below.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

#[test]
fn incremental_compile_equals_a_full_compile_over_random_edits() {
    let a = http_listener("gw", "a", 80, None);
    let b = http_listener("gw", "b", 80, Some("*.example.com"));
    let c = http_listener("gw", "c", 8080, Some("c.example.com"));
    let listeners = [a, b, c];
    for seed in 1..=10u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        // Shared, as the model hands them: unchanged routes keep their `Arc`, so the
        // compiler patches the previous table.
        let mut routes: Vec<Arc<HttpRoute>> = Vec::new();
        let mut compiler = Compiler::new();
        for step in 0..100 {
            for _ in 0..=rng.below(3) {
                let name = format!("r{}", rng.below(10));
                routes.retain(|r| r.id.name != name);
                if rng.below(5) == 0 {
                    continue;
                }
                let on: Vec<&gatehouse_model::Listener> =
                    listeners.iter().filter(|_| rng.below(2) == 0).collect();
                let hosts: &[&str] =
                    [&[][..], &["x.example.com"][..], &["c.example.com", "*.example.com"][..]]
                        [rng.below(3)];
                let path = ["/", "/a", "/a/b"][rng.below(3)];
                let matches = match rng.below(3) {
                    0 => vec![prefix(path)],
                    1 => vec![exact(path), prefix("/z")],
                    _ => vec![],
                };
                let mut r =
                    route(&name, &on, hosts, vec![rule(matches, ["one", "two"][rng.below(2)])]);
                r.created = Some(rng.below(3) as i64);
                routes.insert(rng.below(routes.len() + 1), Arc::new(r));
            }
            let d = Desired {
                generation: 7,
                listeners: listeners.to_vec(),
                http_routes: routes.clone(),
                ..Desired::default()
            };
            let (incremental, p1) = compiler.compile(&d, &Plugins::default());
            let (full, p2) = compile(&d);
            assert_eq!(incremental.describe(), full.describe(), "seed {seed}, step {step}");
            assert_eq!(p1, p2);
        }
    }
}

#[test]
fn only_changed_routes_are_compiled_again() {
    let l = http_listener("gw", "a", 80, None);
    let mut routes: Vec<HttpRoute> = (0..20)
        .map(|i| route(&format!("r{i}"), &[&l], &[], vec![rule(vec![prefix("/")], "one")]))
        .collect();
    let mut compiler = Compiler::new();
    compiler.compile(&desired(vec![l.clone()], routes.clone()), &Plugins::default());
    assert_eq!(compiler.last_compiled(), 20);
    routes[3].rules[0] = rule(vec![prefix("/")], "two");
    let (table, _) =
        compiler.compile(&desired(vec![l.clone()], routes.clone()), &Plugins::default());
    assert_eq!(compiler.last_compiled(), 1);
    assert_eq!(table.describe(), compile(&desired(vec![l], routes)).0.describe());
}
