// Part of the Slack emulator (`slack_emulator.rs` includes it; some test binaries load the
// emulator by `#[path]`, so this is an `include!`, not a module): `conversations.history`
// and `conversations.replies` (with `oldest`, `latest`, `inclusive`, `limit`, `cursor` and `include_all_metadata`:
// message metadata comes back only when asked for, as in Slack), and the failures that
// carry a call out but lose its answer.

/// Slack's `ts` (`seconds.micros`) as microseconds, for ordering and `oldest`.
fn ts_micros(ts: &str) -> Option<u64> {
    let (secs, frac) = ts.split_once('.').unwrap_or((ts, "0"));
    let frac = format!("{frac:0<6}");
    Some(secs.parse::<u64>().ok()? * 1_000_000 + frac.get(..6)?.parse::<u64>().ok()?)
}

/// One page of `messages` (already in answer order) after `oldest`, metadata stripped
/// unless `include_all_metadata`.
fn page(messages: Vec<Value>, args: &Map<String, Value>) -> Answer {
    let oldest = arg(args, "oldest").and_then(|o| ts_micros(&o)).unwrap_or(0);
    let latest = arg(args, "latest").and_then(|l| ts_micros(&l));
    let inclusive = bool_arg(args, "inclusive");
    let with_metadata = bool_arg(args, "include_all_metadata");
    let limit = arg(args, "limit")
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(100)
        .clamp(1, 999);
    let start = arg(args, "cursor")
        .and_then(|c| c.parse::<usize>().ok())
        .unwrap_or(0);
    let selected: Vec<Value> = messages
        .into_iter()
        .filter(|m| {
            let ts = m["ts"].as_str().and_then(ts_micros).unwrap_or(0);
            let after = ts > oldest || (inclusive && ts == oldest);
            let before = latest.is_none_or(|l| ts < l || (inclusive && ts == l));
            after && before
        })
        .map(|mut m| {
            if !with_metadata && let Some(o) = m.as_object_mut() {
                o.remove("metadata");
            }
            m
        })
        .collect();
    let end = (start + limit).min(selected.len());
    let has_more = end < selected.len();
    let next = if has_more { end.to_string() } else { String::new() };
    answer(json!({
        "messages": selected.get(start..end).unwrap_or_default(),
        "has_more": has_more,
        "response_metadata": {"next_cursor": next},
    }))
}

impl Inner {
    /// `conversations.history`: top-level messages (and no thread replies), newest first.
    fn history(&mut self, args: &Map<String, Value>) -> Answer {
        let channel = self.channel_mut(args)?;
        let messages: Vec<Value> = channel
            .messages
            .iter()
            .rev()
            .filter(|m| m.get("thread_ts").is_none_or(|t| *t == m["ts"]))
            .cloned()
            .collect();
        page(messages, args)
    }

    /// `conversations.replies`: the thread `ts`, parent first, then its replies.
    fn replies(&mut self, args: &Map<String, Value>) -> Answer {
        let parent = arg(args, "ts").ok_or("thread_not_found")?;
        let channel = self.channel_mut(args)?;
        let messages: Vec<Value> = channel
            .messages
            .iter()
            .filter(|m| m["ts"] == *parent || m["thread_ts"] == *parent)
            .cloned()
            .collect();
        if messages.is_empty() {
            // Slack's answer for a ts that is no message.
            return Err("thread_not_found");
        }
        page(messages, args)
    }
}

/// Carries the call out, records it as done, then loses the answer: an HTTP error status,
/// or an answer held back for a while.
async fn apply_then_lose(
    state: &Shared,
    method: &str,
    args: Result<Map<String, Value>, Value>,
    bearer_token: Option<String>,
    failure: Failure,
) -> Response {
    let result = {
        let mut inner = lock(state);
        let (body, result) = match args {
            Err(recorded) => (recorded, Err("invalid_json")),
            Ok(args) => {
                let result = inner.dispatch(method, &args);
                (Value::Object(args), result)
            }
        };
        inner.calls.push(RecordedCall {
            method: method.to_owned(),
            body,
            bearer_token,
            failed: result.is_err(),
        });
        result
    };
    match failure {
        Failure::AnswerLost(status) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
            (status, "emulated: the answer was lost").into_response()
        }
        Failure::AnswerAfter(wait) => {
            tokio::time::sleep(wait).await;
            match result {
                Ok(mut answer) => {
                    answer.insert("ok".into(), Value::Bool(true));
                    axum::Json(Value::Object(answer)).into_response()
                }
                Err(code) => slack_error(code),
            }
        }
        _ => unreachable!("only failures that lose an answer come here"),
    }
}
