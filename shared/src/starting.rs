//! Refuses a service's RPCs while the server is still starting (waiting for the database,
//! migrating, loading caches): the port is open so health can say NOT_SERVING, but a
//! request that reached the service before its tables exist would fail with an internal
//! database error instead of the UNAVAILABLE a client retries.
use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
};

use tonic::{body::Body, server::NamedService};

/// Set once start-up has finished; shared by the server task and its starter.
#[derive(Clone, Default)]
pub struct Started(Arc<AtomicBool>);

impl Started {
    pub fn mark(&self) {
        self.0.store(true, Ordering::Release);
    }

    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// `inner`, answering UNAVAILABLE until [`Started::mark`].
#[derive(Clone)]
pub struct UntilStarted<S> {
    inner: S,
    started: Started,
}

impl<S> UntilStarted<S> {
    pub fn new(inner: S, started: Started) -> Self {
        Self { inner, started }
    }
}

impl<S: NamedService> NamedService for UntilStarted<S> {
    const NAME: &'static str = S::NAME;
}

type BoxFuture = Pin<Box<dyn Future<Output = Result<http::Response<Body>, Infallible>> + Send>>;

impl<S> tower::Service<http::Request<Body>> for UntilStarted<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        if self.started.is_set() {
            return Box::pin(self.inner.call(request));
        }
        let status = tonic::Status::unavailable(
            "the service is starting (waiting for its database or loading); retry shortly",
        );
        Box::pin(async move { Ok(status.into_http()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::{Service, ServiceExt};

    #[derive(Clone)]
    struct Ok200;

    impl NamedService for Ok200 {
        const NAME: &'static str = "test.Service";
    }

    impl tower::Service<http::Request<Body>> for Ok200 {
        type Response = http::Response<Body>;
        type Error = Infallible;
        type Future = std::future::Ready<Result<http::Response<Body>, Infallible>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: http::Request<Body>) -> Self::Future {
            std::future::ready(Ok(http::Response::new(Body::empty())))
        }
    }

    fn grpc_status(response: &http::Response<Body>) -> Option<&str> {
        response
            .headers()
            .get("grpc-status")
            .and_then(|value| value.to_str().ok())
    }

    #[tokio::test]
    async fn unavailable_until_started_then_passes_through() {
        let started = Started::default();
        let mut service = UntilStarted::new(Ok200, started.clone());
        let response = service
            .ready()
            .await
            .unwrap()
            .call(http::Request::new(Body::empty()))
            .await
            .unwrap();
        assert_eq!(
            grpc_status(&response),
            Some("14"),
            "UNAVAILABLE while starting"
        );

        started.mark();
        let response = service
            .ready()
            .await
            .unwrap()
            .call(http::Request::new(Body::empty()))
            .await
            .unwrap();
        assert_eq!(grpc_status(&response), None, "the inner service answers");
    }
}
