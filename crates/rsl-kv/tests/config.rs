//! `rsl-kv-server`'s configuration: every refusal names its key and says what is wrong,
//! TOML mistakes name the file and the line, flags override the file field by field, and
//! the `[auth]` section refuses every ambiguous or unusable user.

use std::path::Path;

use rsl_kv::bootstrap::StartMode;
use rsl_kv::config::{parse_map, ConfigError, ConfigFile, ServerConfig, Tuning};
use rsl_kv::LogBackend;

/// A minimal valid configuration of node 1 (a memory log: no data directory needed).
const BASE: &str = "node = 1\nmembers = [\"1=127.0.0.1:7001\", \"2=127.0.0.1:7002\", \"3=127.0.0.1:7003\"]\n\
client_listen = \"127.0.0.1:7101\"\nlog = \"memory\"\n";

fn parse(text: &str) -> Result<ServerConfig, ConfigError> {
    ConfigFile::parse(text, Path::new("kv.toml"))?.resolve()
}

/// The key and the problem of a refusal of `BASE` plus `extra`.
fn refusal(text: &str) -> (String, String) {
    match parse(text).expect_err(text) {
        ConfigError::Invalid { key, problem } => (key.to_owned(), problem),
        other => panic!("expected an invalid key, got {other}"),
    }
}

fn with(extra: &str) -> String {
    format!("{BASE}{extra}\n")
}

/// `BASE` with its line starting with `name` replaced by `line`.
fn replacing(name: &str, line: &str) -> String {
    let mut text: String =
        BASE.lines().filter(|l| !l.starts_with(&format!("{name} "))).map(|l| format!("{l}\n")).collect();
    text.push_str(line);
    text.push('\n');
    text
}

#[test]
fn the_base_configuration_resolves_with_its_defaults() {
    let config = parse(BASE).unwrap();
    assert_eq!(config.ring.0, 1, "ring 1 unless set");
    assert_eq!(config.initial_members.len(), 3, "every member unless set");
    assert_eq!(config.start, StartMode::Auto);
    assert_eq!(config.log, LogBackend::Memory);
    assert_eq!(config.replica_listen.port(), 7001, "the member's own address");
    assert_eq!(config.ready_lag_slots_max, rsl::ReadinessOptions::default().lag_slots_max);
    assert!(config.tls.is_none() && config.client_tls.is_none() && config.auth.is_none());
}

#[test]
fn a_missing_node_is_refused() {
    let (key, problem) = refusal(&BASE.replace("node = 1\n", ""));
    assert_eq!((key.as_str(), problem.as_str()), ("node", "missing: this replica's node id"));
}

#[test]
fn node_zero_is_refused() {
    assert_eq!(refusal(&replacing("node", "node = 0")), ("node".into(), "node ids start at 1, got 0".into()));
}

#[test]
fn ring_zero_is_refused() {
    assert_eq!(refusal(&with("ring = 0")), ("ring".into(), "ring ids start at 1, got 0".into()));
}

#[test]
fn a_ring_id_is_kept() {
    assert_eq!(parse(&with("ring = 7")).unwrap().ring.0, 7);
}

#[test]
fn too_many_members_are_refused() {
    let members: Vec<String> = (1..=rsl::core::MEMBERS_MAX as u64 + 1)
        .map(|id| format!("\"{id}=127.0.0.1:{}\"", 7000 + id))
        .collect();
    let text = replacing("members", &format!("members = [{}]", members.join(", ")));
    let (key, problem) = refusal(&text);
    assert_eq!(key, "members");
    assert!(problem.contains(&format!("at most {}", rsl::core::MEMBERS_MAX)), "{problem}");
}

#[test]
fn a_node_outside_the_members_is_refused_naming_them() {
    let (key, problem) = refusal(&replacing("node", "node = 9"));
    assert_eq!(key, "members");
    assert_eq!(problem, "this node (9) is not among the members [1, 2, 3]");
}

#[test]
fn a_member_without_a_port_is_refused() {
    let (key, problem) = refusal(&replacing("members", "members = [\"1=localhost\"]"));
    assert_eq!(key, "members");
    assert!(problem.contains("not host:port"), "{problem}");
}

#[test]
fn a_member_with_port_zero_is_refused() {
    let (_, problem) = refusal(&replacing("members", "members = [\"1=127.0.0.1:0\"]"));
    assert!(problem.contains("port from 1 to 65535"), "{problem}");
}

#[test]
fn a_member_without_an_equals_sign_is_refused() {
    let (_, problem) = refusal(&replacing("members", "members = [\"127.0.0.1:7001\"]"));
    assert!(problem.contains("is not id=host:port"), "{problem}");
}

#[test]
fn a_member_with_id_zero_is_refused() {
    let (_, problem) = refusal(&replacing("members", "members = [\"0=127.0.0.1:7001\"]"));
    assert!(problem.contains("the node id must be a number from 1"), "{problem}");
}

#[test]
fn an_empty_initial_member_list_is_refused() {
    let (key, problem) = refusal(&with("initial_members = []"));
    assert_eq!((key.as_str(), problem.as_str()), ("initial_members", "must name at least one node"));
}

#[test]
fn an_initial_member_without_an_address_is_refused() {
    let (key, problem) = refusal(&with("initial_members = [1, 4]"));
    assert_eq!((key.as_str(), problem.as_str()), ("initial_members", "node 4 has no address in members"));
}

#[test]
fn initial_members_are_sorted_and_deduplicated() {
    let config = parse(&with("initial_members = [3, 1, 3]")).unwrap();
    let ids: Vec<u64> = config.initial_members.iter().map(|n| n.0).collect();
    assert_eq!(ids, vec![1, 3]);
}

#[test]
fn join_and_bootstrap_together_are_refused() {
    let (key, problem) = refusal(&with("join = true\nbootstrap = true"));
    assert_eq!((key.as_str(), problem.as_str()), ("join", "cannot both join and bootstrap"));
}

#[test]
fn join_and_bootstrap_choose_the_start_mode() {
    assert_eq!(parse(&with("join = true")).unwrap().start, StartMode::Join);
    assert_eq!(parse(&with("bootstrap = true")).unwrap().start, StartMode::Bootstrap);
}

#[test]
fn a_bootstrapping_node_outside_the_initial_members_is_refused() {
    let (key, problem) = refusal(&with("bootstrap = true\ninitial_members = [2, 3]"));
    assert_eq!(key, "initial_members");
    assert!(problem.contains("a bootstrapping node (1) must be among the initial members"), "{problem}");
}

#[test]
fn a_client_address_for_a_stranger_is_refused() {
    let (key, problem) = refusal(&with("clients = [\"7=127.0.0.1:9\"]"));
    assert_eq!((key.as_str(), problem.as_str()), ("clients", "node 7 is not a member"));
}

#[test]
fn the_client_port_comes_from_clients_when_client_listen_is_unset() {
    let text = BASE.replace("client_listen = \"127.0.0.1:7101\"\n", "clients = [\"1=127.0.0.1:7201\"]\n");
    let config = parse(&text).unwrap();
    assert_eq!(config.client_listen.port(), 7201);
    assert_eq!(config.client_address(rsl::NodeId(1)), Some("127.0.0.1:7201"));
    assert_eq!(config.client_address(rsl::NodeId(2)), None);
}

#[test]
fn a_missing_client_port_is_refused_saying_how_to_set_it() {
    let (key, problem) = refusal(&BASE.replace("client_listen = \"127.0.0.1:7101\"\n", ""));
    assert_eq!(key, "client_listen");
    assert!(problem.contains("give node 1 an entry in clients"), "{problem}");
}

#[test]
fn a_client_listen_address_without_a_port_is_refused() {
    let (key, problem) = refusal(&replacing("client_listen", "client_listen = \"localhost\""));
    assert_eq!(key, "client_listen");
    assert!(problem.contains("is not host:port"), "{problem}");
}

#[test]
fn a_replica_listen_address_overrides_the_members_entry() {
    let config = parse(&with("replica_listen = \"0.0.0.0:7999\"")).unwrap();
    assert_eq!(config.replica_listen.port(), 7999);
}

#[test]
fn a_bad_replica_listen_address_is_refused() {
    let (key, _) = refusal(&with("replica_listen = \"nowhere\""));
    assert_eq!(key, "replica_listen");
}

#[test]
fn an_empty_data_dir_is_refused() {
    assert_eq!(refusal(&with("data_dir = \"\"")), ("data_dir".into(), "must not be empty".into()));
}

#[test]
fn a_file_log_needs_a_data_dir() {
    let (key, problem) = refusal(&replacing("log", "log = \"file\""));
    assert_eq!(key, "data_dir");
    assert!(problem.starts_with("missing"), "{problem}");
}

#[test]
fn metrics_port_zero_is_refused() {
    assert_eq!(refusal(&with("metrics_port = 0")).0, "metrics_port");
}

#[test]
fn a_metrics_port_is_kept() {
    assert_eq!(parse(&with("metrics_port = 9100")).unwrap().metrics_port, Some(9100));
}

#[test]
fn ready_lag_slots_max_is_kept() {
    assert_eq!(parse(&with("ready_lag_slots_max = 12")).unwrap().ready_lag_slots_max, 12);
}

#[test]
fn tls_without_a_certificate_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, "pem").unwrap();
    let (key, problem) = refusal(&with(&format!("tls = {{ ca = {ca:?} }}")));
    assert_eq!(key, "tls.cert");
    assert!(problem.contains("TLS needs all of tls.ca, tls.cert and tls.key"), "{problem}");
}

#[test]
fn an_empty_tls_table_means_no_tls() {
    assert!(parse(&with("tls = {}")).unwrap().tls.is_none());
}

#[test]
fn a_bad_tuning_value_is_refused_under_its_tuning_key() {
    assert_eq!(refusal(&with("tuning = { heartbeat_interval_ms = 0 }")).0, "tuning.heartbeat_interval_ms");
    assert_eq!(refusal(&with("tuning = { pipeline_depth = 0 }")).0, "tuning.pipeline_depth");
    assert_eq!(
        refusal(&with("tuning = { election_delay_min_ms = 400, election_delay_max_ms = 300 }")).0,
        "tuning.election_delay_max_ms"
    );
}

#[test]
fn tuning_reaches_the_ring_configuration() {
    let config = parse(&with("tuning = { heartbeat_interval_ms = 20, log_retain_slots = 77 }")).unwrap();
    let ring = config.ring_config();
    assert_eq!(ring.heartbeat_interval_ms, 20);
    assert_eq!(ring.log_retain_slots, 77);
    assert_eq!(ring.node, rsl::NodeId(1));
    assert_eq!(ring.members.len(), 3);
}

#[test]
fn an_unknown_key_is_a_parse_error_naming_the_file_and_the_key() {
    match ConfigFile::parse("nod = 1\n", Path::new("kv.toml")) {
        Err(ConfigError::Parse { path, message }) => {
            assert_eq!(path, Path::new("kv.toml"));
            assert!(message.contains("nod"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_unknown_tuning_key_is_a_parse_error() {
    let error = ConfigFile::parse("[tuning]\nheartbeat_ms = 5\n", Path::new("kv.toml")).unwrap_err();
    assert!(error.to_string().contains("heartbeat_ms"), "{error}");
}

#[test]
fn a_value_of_the_wrong_type_is_a_parse_error_with_its_line() {
    let error = ConfigFile::parse("node = 1\nmetrics_port = \"x\"\n", Path::new("kv.toml")).unwrap_err();
    let text = error.to_string();
    assert!(text.contains("kv.toml") && text.contains("line 2"), "{text}");
}

#[test]
fn a_port_out_of_range_is_a_parse_error() {
    let error = ConfigFile::parse("metrics_port = 70000\n", Path::new("kv.toml")).unwrap_err();
    assert!(matches!(error, ConfigError::Parse { .. }), "{error}");
}

#[test]
fn a_file_that_cannot_be_read_is_refused_naming_it() {
    let missing = Path::new("/nonexistent/kv.toml");
    match ConfigFile::load(missing) {
        Err(error @ ConfigError::Read { .. }) => assert!(error.to_string().contains("/nonexistent/kv.toml")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_config_file_loads_from_disk() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kv.toml");
    std::fs::write(&path, BASE).unwrap();
    assert_eq!(ConfigFile::load(&path).unwrap().resolve().unwrap().node, rsl::NodeId(1));
}

#[test]
fn flags_replace_tls_fields_one_by_one() {
    let file = ConfigFile::parse("[tls]\nca = \"a\"\ncert = \"b\"\n", Path::new("kv.toml")).unwrap();
    let flags = ConfigFile::parse("[tls]\ncert = \"c\"\nkey = \"d\"\n", Path::new("flags")).unwrap();
    let tls = file.merge(flags).tls.unwrap();
    assert_eq!(tls.ca.as_deref(), Some(Path::new("a")));
    assert_eq!(tls.cert.as_deref(), Some(Path::new("c")));
    assert_eq!(tls.key.as_deref(), Some(Path::new("d")));
}

#[test]
fn a_flag_without_a_file_section_stands_alone() {
    let flags = ConfigFile {
        tuning: Some(Tuning { pipeline_depth: Some(3), ..Tuning::default() }),
        ..ConfigFile::default()
    };
    let merged = ConfigFile::default().merge(flags);
    assert_eq!(merged.tuning.unwrap().pipeline_depth, Some(3));
}

#[test]
fn the_file_fills_what_the_flags_leave_unset() {
    let file = ConfigFile::parse(BASE, Path::new("kv.toml")).unwrap();
    let merged = file.clone().merge(ConfigFile::default());
    assert_eq!(merged, file);
}

// ---- parse_map ----

#[test]
fn parse_map_refuses_a_node_listed_twice() {
    let error = parse_map("clients", &["1=a:1".into(), "1=b:2".into()]).unwrap_err();
    assert_eq!(error.to_string(), "config key `clients`: node 1 is listed twice");
}

#[test]
fn parse_map_skips_empty_entries() {
    let map = parse_map("clients", &[",1=a:1,,".into(), "".into()]).unwrap();
    assert_eq!(map.len(), 1);
}

#[test]
fn parse_map_refuses_a_host_without_a_name() {
    let error = parse_map("members", &["1=:7001".into()]).unwrap_err();
    assert!(error.to_string().contains("not host:port"), "{error}");
}

// ---- [auth] ----

fn auth(users: &str) -> (String, String) {
    refusal(&with(&format!("[auth]\nenabled = true\n{users}")))
}

fn user(name: &str, extra: &str) -> String {
    format!("[[auth.users]]\nname = \"{name}\"\nrole = \"read\"\n{extra}\n")
}

fn token_line(token: &str) -> String {
    format!("token_sha256 = \"{}\"", rsl_kv::auth::hash_token(token))
}

#[test]
fn auth_with_an_empty_user_name_is_refused() {
    let (key, problem) = auth(&user(" ", &token_line("t")));
    assert_eq!(key, "auth.users");
    assert_eq!(problem, "entry 1: `name` must not be empty");
}

#[test]
fn auth_with_a_user_without_a_role_is_refused() {
    let (_, problem) = auth(&format!("[[auth.users]]\nname = \"a\"\n{}\n", token_line("t")));
    assert!(problem.contains("missing `role`: read, read-write or admin"), "{problem}");
}

#[test]
fn auth_with_a_user_without_a_credential_is_refused() {
    let (_, problem) = auth(&user("a", ""));
    assert!(problem.contains("entry 1 (\"a\"): no credential"), "{problem}");
}

#[test]
fn auth_with_a_short_token_hash_is_refused_counting_it() {
    let (_, problem) = auth(&user("a", "token_sha256 = \"abcd\""));
    assert!(problem.contains("got 4 characters"), "{problem}");
}

#[test]
fn auth_with_a_non_hexadecimal_token_hash_is_refused_at_its_character() {
    let hash = format!("zz{}", "0".repeat(62));
    let (_, problem) = auth(&user("a", &format!("token_sha256 = \"{hash}\"")));
    assert!(problem.contains("found \"zz\" at character 1"), "{problem}");
}

#[test]
fn auth_with_a_user_listed_twice_is_refused() {
    let users = format!("{}{}", user("a", &token_line("t1")), user("a", &token_line("t2")));
    let (_, problem) = auth(&users);
    assert_eq!(problem, "user \"a\" is listed twice (entries 1 and 2)");
}

#[test]
fn auth_with_one_token_for_two_users_is_refused() {
    let users = format!("{}{}", user("a", &token_line("same")), user("b", &token_line("same")));
    let (_, problem) = auth(&users);
    assert!(problem.contains("have the same token_sha256"), "{problem}");
}

#[test]
fn auth_with_an_empty_cert_name_is_refused() {
    let (_, problem) = auth(&user("a", "cert_name = \" \""));
    assert!(problem.contains("`cert_name` must not be empty"), "{problem}");
}

#[test]
fn auth_disabled_resolves_to_no_auth_but_still_checks_users() {
    assert!(parse(&with(&format!("[auth]\nenabled = false\n{}", user("a", &token_line("t")))))
        .unwrap()
        .auth
        .is_none());
    let (key, _) = refusal(&with(&format!("[auth]\nenabled = false\n{}", user("", &token_line("t")))));
    assert_eq!(key, "auth.users");
}

#[test]
fn auth_enabled_keeps_its_users_and_roles() {
    let config = parse(&with(&format!("[auth]\nenabled = true\n{}", user("a", &token_line("t"))))).unwrap();
    let users = config.auth.unwrap().users;
    assert_eq!(users.len(), 1);
    assert_eq!(users[0].name, "a");
    assert_eq!(users[0].role, rsl_kv::auth::Role::Read);
}
