//! Waiting on conditions: poll, with a limit that names what was awaited.

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

/// How often a condition is polled. Each poll of a cluster condition is a
/// few local RPCs, so a short interval costs little and shortens tests.
pub const POLL: Duration = Duration::from_millis(50);

/// Polls `f` every [`POLL`] until it returns `Some`; an error naming `what`
/// once `limit` has passed.
pub async fn poll_until<T, F, Fut>(what: &str, limit: Duration, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// [`poll_until`] for tests: panics with the error instead of returning it.
pub async fn wait_for<T, F, Fut>(what: &str, limit: Duration, f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    poll_until(what, limit, f).await.unwrap_or_else(|e| panic!("{e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn given_a_condition_that_never_holds_then_the_error_names_it_and_the_limit() {
        let err = poll_until("the moon", Duration::from_millis(120), || async { None::<()> }).await.unwrap_err();
        assert_eq!(err.to_string(), "timed out after 120ms waiting for the moon");
    }

    #[tokio::test]
    async fn given_a_condition_that_holds_on_the_third_poll_then_its_value_is_returned() {
        let mut polls = 0;
        let v = poll_until("three polls", Duration::from_secs(1), || {
            polls += 1;
            let n = polls;
            async move { (n == 3).then_some(n) }
        })
        .await
        .unwrap();
        assert_eq!(v, 3);
    }
}
