//! `lbx check --admin ADDR`: the pool as a running balancer sees it, read from its admin API
//! (`GET /backends`) and shown as a table or JSON.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, Context as _};
use bytes::Bytes;
use http::{header, HeaderValue, Request};
use http_body_util::{BodyExt, Full, Limited};
use serde_json::Value;

use super::report::{align, Paint};
use crate::core::addr::Target;
use crate::core::client::{handshake_any, to_h2, Dialer, USER_AGENT};

/// Largest `/backends` answer read.
const MAX_BODY: usize = 16 * 1024 * 1024;

/// Fetches `GET /backends` from the admin API at `admin`.
pub async fn fetch(
    dialer: &Dialer,
    admin: &Target,
    token: Option<&str>,
    timeout: Duration,
) -> anyhow::Result<Vec<Value>> {
    let work = async {
        let stream = dialer.dial(admin).await.map_err(|e| anyhow!("{e}"))?.0;
        let mut tx = handshake_any::<Full<Bytes>>(stream, admin).await?;
        let mut req = Request::get("/backends").body(Full::new(Bytes::new()))?;
        let h = req.headers_mut();
        h.insert(header::HOST, HeaderValue::from_str(&admin.authority)?);
        h.insert(header::USER_AGENT, HeaderValue::from_static(USER_AGENT));
        if let Some(t) = token {
            let v = HeaderValue::from_str(&format!("Bearer {t}"))
                .map_err(|_| crate::usage("--admin-token is not a valid header value"))?;
            h.insert(header::AUTHORIZATION, v);
        }
        if tx.is_h2() {
            to_h2(&mut req, admin);
        }
        let resp = tx.try_send_request(req).await.map_err(|e| e.into_error())?;
        let status = resp.status();
        let body = Limited::new(resp.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| anyhow!("reading the answer: {e}"))?
            .to_bytes();
        let v: Value = serde_json::from_slice(&body).context("the answer is not JSON")?;
        if !status.is_success() {
            let msg = v["error"].as_str().unwrap_or("no message");
            return Err(anyhow!("answered {}: {msg}", status.as_u16()));
        }
        match v {
            Value::Array(list) => Ok(list),
            _ => Err(anyhow!("the answer is not a list of backends")),
        }
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| anyhow!("timed out after {timeout:?}"))?
        .with_context(|| format!("admin API at {admin}"))
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The pool as an aligned table, a header line first.
pub fn table(backends: &[Value]) -> Vec<String> {
    let heads = [
        "BACKEND",
        "STATE",
        "WEIGHT",
        "IN-FLIGHT",
        "REQUESTS",
        "ERRORS",
        "EWMA",
        "LAST PROBE",
    ];
    let mut grid: Vec<Vec<(String, Paint)>> =
        vec![heads.iter().map(|h| (h.to_string(), Paint::Bold)).collect()];
    for b in backends {
        let state = text(&b["state"]);
        let paint = match state.as_str() {
            "healthy" => Paint::Green,
            "draining" => Paint::Yellow,
            _ => Paint::Red,
        };
        let state = if b["removing"] == true {
            format!("{state} (removing)")
        } else {
            state
        };
        let ewma = b["latency_ewma_ms"]
            .as_f64()
            .map_or("-".into(), |ms| format!("{ms:.1}ms"));
        let probe = &b["last_probe"];
        let probe = if probe.is_null() {
            "-".into()
        } else {
            format!(
                "{} {} at {}",
                if probe["healthy"] == true {
                    "pass"
                } else {
                    "fail"
                },
                text(&probe["status"]),
                text(&probe["time"])
            )
        };
        let plain = |v: &Value| (text(v), Paint::Plain);
        grid.push(vec![
            plain(&b["address"]),
            (state, paint),
            plain(&b["weight"]),
            plain(&b["in_flight"]),
            plain(&b["requests"]),
            plain(&b["errors"]),
            (ewma, Paint::Plain),
            (probe, Paint::Plain),
        ]);
    }
    align(&grid)
}

/// Prints the pool; exit 0 when every backend is healthy, 1 otherwise.
pub fn run(
    dialer: &Dialer,
    admin: &Target,
    token: Option<&str>,
    timeout: Duration,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let backends = rt.block_on(fetch(dialer, admin, token, timeout))?;
    if json {
        crate::term::out(&serde_json::to_string_pretty(&backends)?);
    } else {
        for line in table(&backends) {
            crate::term::out(&line);
        }
    }
    let all_healthy = backends.iter().all(|b| b["state"] == "healthy");
    Ok(if all_healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn table_has_a_row_per_backend() {
        let rows = table(&[
            json!({"address": "127.0.0.1:9001", "state": "healthy", "weight": 1, "in_flight": 0,
                   "requests": 5, "errors": 0, "latency_ewma_ms": 1.34, "removing": false,
                   "last_probe": {"healthy": true, "status": 200, "time": "T"}}),
            json!({"address": "127.0.0.1:9002", "state": "draining", "weight": 2, "in_flight": 1,
                   "requests": 0, "errors": 0, "latency_ewma_ms": null, "removing": true,
                   "last_probe": null}),
        ]);
        assert_eq!(rows.len(), 3);
        assert!(rows[0].starts_with("BACKEND"));
        assert!(rows[1].contains("1.3ms") && rows[1].contains("pass 200 at T"));
        assert!(rows[2].contains("draining (removing)"));
    }
}
