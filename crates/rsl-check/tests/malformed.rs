//! A malformed history, one field at a time: each is refused with the line it is on and a
//! message naming the field and what was found (the file format of docs/TESTING.md).

use rsl_check::{parse_history, ParseError};

/// Parses `lines` (after a well-formed first operation, on lines 1 and 2) and returns the
/// error, checking that it names the line it is on, counted in the whole file.
fn refused(lines: &[&str], line: usize) -> ParseError {
    let mut text = String::from(
        "{\"process\":9,\"type\":\"invoke\",\"f\":\"put\",\"key\":\"a\",\"value\":1,\"time\":0}\n\
         {\"process\":9,\"type\":\"ok\",\"f\":\"put\",\"key\":\"a\",\"value\":1,\"time\":1}\n",
    );
    for l in lines {
        text.push_str(l);
        text.push('\n');
    }
    let error = parse_history(&text).expect_err("malformed");
    assert_eq!(error.line(), line + 2, "{error}");
    error
}

#[test]
fn a_process_that_is_a_string_is_refused() {
    let error = refused(&[r#"{"process":"a","type":"invoke","f":"put","key":"k","value":1,"time":0}"#], 1);
    assert!(matches!(error, ParseError::InvalidEvent { .. }), "{error:?}");
    assert!(error.message().contains("`process` must be a non-negative integer, got \"a\""), "{error}");
}

#[test]
fn a_process_that_is_fractional_is_refused() {
    let error = refused(&[r#"{"process":1.5,"type":"invoke","f":"put","key":"k","value":1,"time":0}"#], 1);
    assert!(matches!(error, ParseError::InvalidEvent { .. }), "{error:?}");
    assert!(error.message().contains("`process` must be a non-negative integer"), "{error}");
}

#[test]
fn a_type_that_is_not_a_string_is_refused() {
    let error = refused(&[r#"{"process":0,"type":1,"f":"put","key":"k","value":1,"time":0}"#], 1);
    assert!(matches!(error, ParseError::InvalidEvent { .. }), "{error:?}");
    assert!(error.message().contains("`type` must be a string, got 1"), "{error}");
}

#[test]
fn a_missing_type_is_refused() {
    let error = refused(&[r#"{"process":0,"f":"put","key":"k","value":1,"time":0}"#], 1);
    assert!(matches!(error, ParseError::InvalidEvent { .. }), "{error:?}");
    assert!(error.message().contains("missing field `type`"), "{error}");
}

#[test]
fn an_f_that_is_not_a_string_is_refused() {
    let error = refused(&[r#"{"process":0,"type":"invoke","f":null,"key":"k","value":1,"time":0}"#], 1);
    assert!(matches!(error, ParseError::InvalidEvent { .. }), "{error:?}");
    assert!(error.message().contains("`f` must be a string, got null"), "{error}");
}

#[test]
fn a_missing_f_is_refused() {
    let error = refused(&[r#"{"process":0,"type":"invoke","key":"k","value":1,"time":0}"#], 1);
    assert!(matches!(error, ParseError::InvalidEvent { .. }), "{error:?}");
    assert!(error.message().contains("missing field `f`"), "{error}");
}

#[test]
fn a_key_that_is_a_boolean_is_refused() {
    let error = refused(&[r#"{"process":0,"type":"invoke","f":"put","key":true,"value":1,"time":0}"#], 1);
    assert!(matches!(error, ParseError::InvalidEvent { .. }), "{error:?}");
    assert!(error.message().contains("`key` must be a string or an integer, got true"), "{error}");
}

#[test]
fn a_key_that_is_fractional_is_refused() {
    let error = refused(&[r#"{"process":0,"type":"invoke","f":"put","key":1.5,"value":1,"time":0}"#], 1);
    assert!(matches!(error, ParseError::InvalidEvent { .. }), "{error:?}");
    assert!(error.message().contains("`key` must be a string or an integer"), "{error}");
}

#[test]
fn a_negative_time_is_refused() {
    let error = refused(&[r#"{"process":0,"type":"invoke","f":"put","key":"k","value":1,"time":-1}"#], 1);
    assert!(matches!(error, ParseError::InvalidEvent { .. }), "{error:?}");
    assert!(error.message().contains("`time` must be a non-negative integer, got -1"), "{error}");
}

#[test]
fn a_time_that_is_a_string_is_refused() {
    let error = refused(&[r#"{"process":0,"type":"invoke","f":"put","key":"k","value":1,"time":"now"}"#], 1);
    assert!(matches!(error, ParseError::InvalidEvent { .. }), "{error:?}");
    assert!(error.message().contains("`time` must be a non-negative integer"), "{error}");
}

#[test]
fn a_delete_invocation_with_a_value_is_refused() {
    let error = refused(&[r#"{"process":0,"type":"invoke","f":"delete","key":"k","value":3,"time":10}"#], 1);
    assert!(matches!(error, ParseError::InvalidEvent { .. }), "{error:?}");
    assert!(error.message().contains("delete invocation value must be null, got 3"), "{error}");
}

#[test]
fn a_put_invocation_with_an_object_value_is_refused() {
    let error =
        refused(&[r#"{"process":0,"type":"invoke","f":"put","key":"k","value":{"a":1},"time":10}"#], 1);
    assert!(matches!(error, ParseError::InvalidEvent { .. }), "{error:?}");
    assert!(error.message().contains("put invocation value must be an integer or a string"), "{error}");
}

#[test]
fn a_cas_invocation_with_an_object_in_the_pair_is_refused() {
    let error =
        refused(&[r#"{"process":0,"type":"invoke","f":"cas","key":"k","value":[{"a":1},2],"time":10}"#], 1);
    assert!(matches!(error, ParseError::InvalidEvent { .. }), "{error:?}");
    assert!(error.message().contains("cas invocation value must be [expected or null, new]"), "{error}");
}

#[test]
fn a_cas_invocation_with_a_null_new_value_is_refused() {
    let error =
        refused(&[r#"{"process":0,"type":"invoke","f":"cas","key":"k","value":[1,null],"time":10}"#], 1);
    assert!(matches!(error, ParseError::InvalidEvent { .. }), "{error:?}");
    assert!(error.message().contains("cas invocation value"), "{error}");
}

#[test]
fn a_put_completion_of_another_type_is_refused() {
    let error = refused(
        &[
            r#"{"process":0,"type":"invoke","f":"put","key":"k","value":1,"time":10}"#,
            r#"{"process":0,"type":"ok","f":"put","key":"k","value":[1],"time":11}"#,
        ],
        2,
    );
    assert!(matches!(error, ParseError::InvalidEvent { .. }), "{error:?}");
    assert!(error.message().contains("put completion value must be an integer, a string or null"), "{error}");
}

#[test]
fn a_get_completion_with_a_list_is_refused() {
    let error = refused(
        &[
            r#"{"process":0,"type":"invoke","f":"get","key":"k","value":null,"time":10}"#,
            r#"{"process":0,"type":"ok","f":"get","key":"k","value":[1],"time":11}"#,
        ],
        2,
    );
    assert!(matches!(error, ParseError::InvalidEvent { .. }), "{error:?}");
    assert!(error.message().contains("get completion value must be an integer, a string or null"), "{error}");
}

#[test]
fn a_delete_completion_with_a_value_is_refused() {
    let error = refused(
        &[
            r#"{"process":0,"type":"invoke","f":"delete","key":"k","value":null,"time":10}"#,
            r#"{"process":0,"type":"ok","f":"delete","key":"k","value":1,"time":11}"#,
        ],
        2,
    );
    assert!(matches!(error, ParseError::InvalidEvent { .. }), "{error:?}");
    assert!(error.message().contains("delete completion value must be null, got 1"), "{error}");
}

#[test]
fn a_cas_completion_with_a_number_is_refused() {
    let error = refused(
        &[
            r#"{"process":0,"type":"invoke","f":"cas","key":"k","value":[1,2],"time":10}"#,
            r#"{"process":0,"type":"ok","f":"cas","key":"k","value":7,"time":11}"#,
        ],
        2,
    );
    assert!(matches!(error, ParseError::InvalidEvent { .. }), "{error:?}");
    assert!(
        error.message().contains("cas completion value must be [expected or null, new], true or false"),
        "{error}"
    );
}

#[test]
fn a_cas_completion_with_another_pair_is_refused() {
    let error = refused(
        &[
            r#"{"process":0,"type":"invoke","f":"cas","key":"k","value":[1,2],"time":10}"#,
            r#"{"process":0,"type":"ok","f":"cas","key":"k","value":[1,3],"time":11}"#,
        ],
        2,
    );
    assert!(matches!(error, ParseError::MismatchedCompletion { invoke_line: 3, .. }), "{error:?}");
    assert!(error.message().contains("differs from the invoked [expected, new]"), "{error}");
}

#[test]
fn a_completion_of_another_function_is_refused() {
    let error = refused(
        &[
            r#"{"process":0,"type":"invoke","f":"put","key":"k","value":1,"time":10}"#,
            r#"{"process":0,"type":"ok","f":"delete","key":"k","time":11}"#,
        ],
        2,
    );
    assert!(matches!(error, ParseError::MismatchedCompletion { invoke_line: 3, .. }), "{error:?}");
    assert!(error.message().contains("f is \"delete\" but the invocation's is \"put\""), "{error}");
}

#[test]
fn a_completion_of_another_key_is_refused() {
    let error = refused(
        &[
            r#"{"process":0,"type":"invoke","f":"put","key":"k","value":1,"time":10}"#,
            r#"{"process":0,"type":"fail","f":"put","key":"j","time":11}"#,
        ],
        2,
    );
    assert!(matches!(error, ParseError::MismatchedCompletion { invoke_line: 3, .. }), "{error:?}");
    assert!(error.message().contains("key is \"j\" but the invocation's is \"k\""), "{error}");
}

#[test]
fn a_completion_before_its_invocation_is_refused() {
    let error = refused(
        &[
            r#"{"process":0,"type":"invoke","f":"put","key":"k","value":1,"time":10}"#,
            r#"{"process":0,"type":"info","f":"put","key":"k","time":9}"#,
        ],
        2,
    );
    assert!(matches!(error, ParseError::MismatchedCompletion { invoke_line: 3, .. }), "{error:?}");
    assert!(error.message().contains("info at time 9 precedes the invocation at time 10"), "{error}");
}

#[test]
fn a_put_acknowledging_another_value_is_refused() {
    let error = refused(
        &[
            r#"{"process":0,"type":"invoke","f":"put","key":"k","value":1,"time":10}"#,
            r#"{"process":0,"type":"ok","f":"put","key":"k","value":2,"time":11}"#,
        ],
        2,
    );
    assert!(matches!(error, ParseError::MismatchedCompletion { invoke_line: 3, .. }), "{error:?}");
    assert!(error.message().contains("put completion value 2 differs from the value written"), "{error}");
}

#[test]
fn a_json_array_line_is_refused() {
    let error = refused(&[r#"[1,2]"#], 1);
    assert!(matches!(error, ParseError::InvalidEvent { .. }), "{error:?}");
    assert!(error.message().contains("expected a JSON object"), "{error}");
}

#[test]
fn a_line_cut_in_the_middle_is_refused() {
    let error = refused(&[r#"{"process":0,"type":"#], 1);
    assert!(matches!(error, ParseError::Json { .. }), "{error:?}");
}

#[test]
fn blank_lines_and_unknown_fields_are_ignored() {
    let text = "\n{\"process\":0,\"type\":\"invoke\",\"f\":\"get\",\"key\":7,\"time\":0,\"extra\":[1]}\n\n\
                {\"process\":0,\"type\":\"ok\",\"f\":\"get\",\"key\":\"7\",\"value\":null,\"time\":3}\n";
    let history = parse_history(text).expect("valid");
    assert_eq!(history.events, 2);
    assert_eq!(history.origins[0].invoke_line, 2);
    assert_eq!(history.origins[0].completion_line, Some(4));
}

#[test]
fn a_process_may_invoke_again_after_an_info() {
    let text = "{\"process\":0,\"type\":\"invoke\",\"f\":\"put\",\"key\":\"k\",\"value\":1,\"time\":0}\n\
                {\"process\":0,\"type\":\"info\",\"f\":\"put\",\"key\":\"k\",\"time\":1}\n\
                {\"process\":0,\"type\":\"invoke\",\"f\":\"get\",\"key\":\"k\",\"time\":2}\n";
    let history = parse_history(text).expect("valid");
    assert_eq!(history.origins.len(), 2);
}
