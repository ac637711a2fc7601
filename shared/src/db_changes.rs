//! Following a table that other replicas change: woken by a PostgreSQL NOTIFY on the
//! table's channel when one can be had, and on every poll tick regardless (the only signal
//! on SQLite, and the fallback while notifications are down). Both services' caches follow
//! their tables this way.
use std::time::Duration;

use sea_orm::sqlx::postgres::PgListener;
use sea_orm::{DatabaseConnection, DbBackend};
use tokio::time::{Interval, MissedTickBehavior};

/// Why [`ChangeFeed::next`] returned.
pub enum Wake {
    /// A notification or a poll tick: look at the table.
    Look,
    /// Notifications were lost (some changes may have gone unannounced): look, and
    /// distrust what only notifications would have told.
    NotificationsLost,
    /// Shutdown began.
    Shutdown,
}

pub struct ChangeFeed {
    db: DatabaseConnection,
    channel: &'static str,
    /// What changes, for the logs (`policy changes`, `device changes`).
    what: &'static str,
    listener: Option<PgListener>,
    ticks: Interval,
}

impl ChangeFeed {
    pub fn new(
        db: DatabaseConnection,
        channel: &'static str,
        what: &'static str,
        poll_interval: Duration,
    ) -> Self {
        let mut ticks = tokio::time::interval(poll_interval);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Self {
            db,
            channel,
            what,
            listener: None,
            ticks,
        }
    }

    /// Waits for the next notification, poll tick or shutdown; (re)connects the listener
    /// first when it is down.
    pub async fn next(&mut self, shutdown: &mut tokio::sync::watch::Receiver<bool>) -> Wake {
        if self.listener.is_none() && self.db.get_database_backend() == DbBackend::Postgres {
            self.listener = self.listen().await;
        }
        let notified = async {
            match self.listener.as_mut() {
                Some(listener) => listener.recv().await.map(|_| ()),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.changed() => Wake::Shutdown,
            result = notified => match result {
                Ok(()) => Wake::Look,
                Err(error) => {
                    tracing::warn!(%error, "{} notifications lost; polling until reconnected", self.what);
                    self.listener = None;
                    Wake::NotificationsLost
                }
            },
            _ = self.ticks.tick() => Wake::Look,
        }
    }

    async fn listen(&self) -> Option<PgListener> {
        let pool = self.db.get_postgres_connection_pool();
        let result = async {
            let mut listener = PgListener::connect_with(pool).await?;
            listener.listen(self.channel).await?;
            Ok::<_, sea_orm::sqlx::Error>(listener)
        }
        .await;
        match result {
            Ok(listener) => Some(listener),
            Err(error) => {
                tracing::warn!(%error, "cannot LISTEN for {}; polling", self.what);
                None
            }
        }
    }
}
