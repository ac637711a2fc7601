//! A device server that can be killed as a process dies: it runs on a runtime of its own,
//! and killing it drops every one of its tasks where they stand (a delivery in the middle
//! of its HTTP request, a lease never given back), with no graceful shutdown.
use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::oneshot;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::{DEVICE_SERVICE, DeviceClient, Role, RunningServer};

pub struct KillableDevice {
    pub addr: SocketAddr,
    kill: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Builds and runs a device server with `config` on a runtime of its own thread, and waits
/// until it is SERVING.
pub async fn spawn_killable_device(
    config: enroll_device::config::DeviceConfig,
    clock: enroll_shared::time::SharedClock,
) -> KillableDevice {
    let (kill, killed) = oneshot::channel::<()>();
    let (ready, bound) = oneshot::channel::<SocketAddr>();
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let app = enroll_device::app::Application::build_with_clock(config, clock)
                .await
                .expect("build device server");
            let _ = ready.send(app.local_addr().expect("addr"));
            tokio::select! {
                result = app.run_until(std::future::pending::<()>()) => {
                    panic!("device server ended: {result:?}");
                }
                _ = killed => {}
            }
        });
        // Every task of the server is dropped where it stands, none is waited for.
        runtime.shutdown_background();
    });
    let addr = bound.await.expect("the device server was built");
    let device = KillableDevice {
        addr,
        kill: Some(kill),
        thread: Some(thread),
    };
    RunningServer::detached(addr)
        .wait_for_health(
            DEVICE_SERVICE,
            ServingStatus::Serving,
            Duration::from_secs(10),
        )
        .await;
    device
}

impl KillableDevice {
    pub fn device_as(&self, role: Role) -> DeviceClient {
        RunningServer::detached(self.addr).device_as(role)
    }

    /// Kills the server: its runtime stops, its connections drop, nothing is cleaned up.
    pub fn kill(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        if let Some(kill) = self.kill.take() {
            let _ = kill.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for KillableDevice {
    fn drop(&mut self) {
        self.stop_now();
    }
}
