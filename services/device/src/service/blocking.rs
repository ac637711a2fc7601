//! CPU-heavy work (argon2, attestation verification) on the blocking pool, in the caller's
//! tracing span, at most one job per core at a time: argon2id fills 19 MiB per hash, so
//! more jobs than cores only thrash the caches (and queue on the cores anyway).
use std::sync::Arc;

use tokio::sync::Semaphore;
use tracing::Instrument;

use crate::error::DeviceError;

#[derive(Clone)]
pub struct BlockingPool {
    slots: Arc<Semaphore>,
}

/// One set of slots for the whole process: token and device use cases share the cores, so
/// "one job per core" holds across them.
static SLOTS: std::sync::OnceLock<Arc<Semaphore>> = std::sync::OnceLock::new();

impl Default for BlockingPool {
    fn default() -> Self {
        let slots = SLOTS.get_or_init(|| {
            let cores = std::thread::available_parallelism()
                .map(usize::from)
                .unwrap_or(1);
            Arc::new(Semaphore::new(cores))
        });
        Self {
            slots: slots.clone(),
        }
    }
}

impl BlockingPool {
    /// Runs `work` on the blocking pool. The permit lives as long as the job, even when the
    /// caller gives up.
    pub async fn run<T: Send + 'static>(
        &self,
        what: &str,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, DeviceError> {
        let span = tracing::Span::current();
        // The caller's subscriber too: one set for a thread or a test (not the global one)
        // must see what the work logs.
        let dispatch = tracing::dispatcher::get_default(Clone::clone);
        let permit = self
            .slots
            .clone()
            .acquire_owned()
            .instrument(span.clone())
            .await
            .map_err(|error| DeviceError::Unavailable(format!("{what}: {error}")))?;
        tokio::task::spawn_blocking(move || {
            let done = tracing::dispatcher::with_default(&dispatch, || span.in_scope(work));
            drop(permit);
            done
        })
        .await
        .map_err(|error| DeviceError::Unavailable(format!("{what} task: {error}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn work_runs_in_the_callers_span() {
        // The blocking thread has no subscriber of its own: a global one makes spans real.
        let _ = tracing::subscriber::set_global_default(tracing_subscriber::registry());
        let pool = BlockingPool::default();
        let span = tracing::info_span!("caller");
        assert!(span.id().is_some());
        let inner = pool
            .run("test", || tracing::Span::current().id())
            .instrument(span.clone())
            .await
            .unwrap();
        assert_eq!(inner, span.id());
    }
}
