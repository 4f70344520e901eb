//! Readiness: pings every dependency concurrently, each with a deadline.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use waiter_ports::health::{DependencyStatus, HealthUseCases, Probe};

/// How long one dependency may take to answer before it counts as down.
const PING_DEADLINE: Duration = Duration::from_secs(2);

/// Answers readiness from a set of [`Probe`]s.
pub struct HealthService {
    probes: Vec<Arc<dyn Probe>>,
}

impl HealthService {
    /// Reports on these dependencies.
    pub fn new(probes: Vec<Arc<dyn Probe>>) -> Self {
        Self { probes }
    }
}

impl std::fmt::Debug for HealthService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<_> = self.probes.iter().map(|probe| probe.name()).collect();
        f.debug_struct("HealthService")
            .field("probes", &names)
            .finish()
    }
}

#[async_trait]
impl HealthUseCases for HealthService {
    async fn readiness(&self) -> Vec<DependencyStatus> {
        let pings = self.probes.iter().map(|probe| async move {
            let answer = tokio::time::timeout(PING_DEADLINE, probe.ping()).await;
            let ready = matches!(answer, Ok(Ok(())));
            if !ready {
                tracing::warn!(
                    dependency = probe.name(),
                    ?answer,
                    "dependency is not ready"
                );
            }
            DependencyStatus {
                name: probe.name(),
                ready,
            }
        });
        futures::future::join_all(pings).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use waiter_ports::PortError;
    use waiter_ports::health::MockProbe;

    fn probe(name: &'static str, up: bool) -> Arc<dyn Probe> {
        let mut probe = MockProbe::new();
        probe.expect_name().return_const(name);
        probe.expect_ping().returning(move || {
            if up {
                Ok(())
            } else {
                Err(PortError::Unavailable(anyhow::anyhow!(
                    "connection refused"
                )))
            }
        });
        Arc::new(probe)
    }

    #[tokio::test]
    async fn reports_each_dependency_separately() {
        let health = HealthService::new(vec![probe("database", true), probe("cache", false)]);
        let report = health.readiness().await;
        assert_eq!(
            report,
            [
                DependencyStatus {
                    name: "database",
                    ready: true
                },
                DependencyStatus {
                    name: "cache",
                    ready: false
                },
            ]
        );
    }
}
