//! Authentication and role checks without a server: who a token or a client certificate
//! names, what each role may do, the refusals clients read, and the tokens a client may send.

use rsl_kv::auth::{hash_token, Access, AuthConfig, AuthError, Authenticator, Operation, Role, User};
use rsl_kv::{ClientError, Token};

fn sha(token: &str) -> [u8; 32] {
    let hex = hash_token(token);
    let mut hash = [0u8; 32];
    for (i, byte) in hash.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap();
    }
    hash
}

fn authenticator() -> Authenticator {
    let users = vec![
        User { name: "reader".into(), role: Role::Read, token_sha256: Some(sha("r-token")), cert_name: None },
        User {
            name: "writer".into(),
            role: Role::ReadWrite,
            token_sha256: Some(sha("w-token")),
            cert_name: None,
        },
        User {
            name: "operator".into(),
            role: Role::Admin,
            token_sha256: None,
            cert_name: Some("ops.example".into()),
        },
    ];
    Authenticator::new(&AuthConfig { users })
}

fn unauthenticated(result: Result<Access, AuthError>) -> String {
    match result {
        Err(AuthError::Unauthenticated(reason)) => reason,
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_known_token_names_its_user_and_role() {
    let access = authenticator().authenticate(Some("w-token"), &[]).unwrap();
    assert_eq!(access.role, Role::ReadWrite);
    assert_eq!(access.user.as_deref(), Some("writer"));
}

#[test]
fn an_unknown_token_is_refused() {
    let reason = unauthenticated(authenticator().authenticate(Some("guess"), &[]));
    assert_eq!(reason, "the bearer token matches no user");
}

#[test]
fn a_token_wins_over_a_certificate() {
    let result = authenticator().authenticate(Some("guess"), &["ops.example".to_owned()]);
    assert!(matches!(result, Err(AuthError::Unauthenticated(_))), "a wrong token is not rescued");
}

#[test]
fn a_known_certificate_name_names_its_user() {
    let access = authenticator().authenticate(None, &["other".into(), "ops.example".into()]).unwrap();
    assert_eq!((access.user.as_deref(), access.role), (Some("operator"), Role::Admin));
}

#[test]
fn an_unknown_certificate_is_refused_naming_its_names() {
    let reason = unauthenticated(authenticator().authenticate(None, &["mallory.example".into()]));
    assert!(reason.contains("mallory.example") && reason.contains("matches no user"), "{reason}");
}

#[test]
fn no_credentials_at_all_are_refused_saying_what_to_send() {
    let reason = unauthenticated(authenticator().authenticate(None, &[]));
    assert!(reason.contains("authorization: Bearer"), "{reason}");
}

#[test]
fn a_reader_may_read_but_not_write() {
    let access = authenticator().authenticate(Some("r-token"), &[]).unwrap();
    access.authorize(Operation::Read, "Get").unwrap();
    let error = access.authorize(Operation::Write, "Put").unwrap_err();
    assert_eq!(
        error,
        AuthError::Forbidden {
            user: "reader".into(),
            role: Role::Read,
            operation: Operation::Write,
            rpc: "Put".into()
        }
    );
    assert_eq!(error.to_string(), "user \"reader\" (role read) may not write: Put refused");
}

#[test]
fn a_writer_may_not_reconfigure() {
    let access = authenticator().authenticate(Some("w-token"), &[]).unwrap();
    access.authorize(Operation::Write, "Put").unwrap();
    let error = access.authorize(Operation::Reconfigure, "ChangeMembers").unwrap_err();
    assert!(error.to_string().contains("may not reconfigure the ring"), "{error}");
}

#[test]
fn a_writer_may_not_back_up() {
    let access = authenticator().authenticate(Some("w-token"), &[]).unwrap();
    assert!(access.authorize(Operation::Backup, "Snapshot").unwrap_err().to_string().contains("back up"));
}

#[test]
fn a_writer_may_not_operate_the_ring() {
    let access = authenticator().authenticate(Some("w-token"), &[]).unwrap();
    assert!(access
        .authorize(Operation::Control, "Promote")
        .unwrap_err()
        .to_string()
        .contains("operate the ring"));
}

#[test]
fn an_admin_may_do_everything() {
    let access = authenticator().authenticate(None, &["ops.example".into()]).unwrap();
    for operation in
        [Operation::Read, Operation::Write, Operation::Reconfigure, Operation::Backup, Operation::Control]
    {
        access.authorize(operation, "Any").unwrap();
    }
}

#[test]
fn open_access_is_an_anonymous_admin() {
    let access = Access::open();
    assert_eq!((access.user, access.role), (None, Role::Admin));
    Access::open().authorize(Operation::Control, "Promote").unwrap();
}

#[test]
fn a_forbidden_anonymous_caller_is_named_anonymous() {
    let access = Access { user: None, role: Role::Read };
    assert!(access.authorize(Operation::Write, "Put").unwrap_err().to_string().contains("\"anonymous\""));
}

#[test]
fn roles_display_as_the_configuration_spells_them() {
    assert_eq!(Role::Read.to_string(), "read");
    assert_eq!(Role::ReadWrite.to_string(), "read-write");
    assert_eq!(Role::Admin.to_string(), "admin");
}

#[test]
fn the_token_hash_is_sha256_in_lowercase_hexadecimal() {
    let hash = hash_token("secret");
    assert_eq!(hash.len(), 64);
    assert!(hash.chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)));
    assert_ne!(hash, hash_token("secret "));
}

#[test]
fn an_empty_token_is_refused() {
    assert!(matches!(Token::new(""), Err(ClientError::InvalidToken(reason)) if reason.contains("empty")));
}

#[test]
fn a_token_with_a_space_is_refused() {
    assert!(
        matches!(Token::new("a b"), Err(ClientError::InvalidToken(reason)) if reason.contains("without spaces"))
    );
}

#[test]
fn a_token_with_a_control_character_is_refused() {
    assert!(matches!(Token::new("a\nb"), Err(ClientError::InvalidToken(_))));
}

#[test]
fn an_overlong_token_is_refused_counting_it() {
    let long = "x".repeat(10_000);
    assert!(
        matches!(Token::new(&long), Err(ClientError::InvalidToken(reason)) if reason.contains("10000 bytes"))
    );
}

#[test]
fn a_visible_ascii_token_is_taken() {
    Token::new("AbC-123_.~").unwrap();
}
