//! Readiness: pings every dependency concurrently, each with a deadline.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use waiter_ports::health::{DependencyState, DependencyStatus, HealthUseCases, Probe};

/// How long one dependency may take to answer before it counts as down.
const PING_DEADLINE: Duration = Duration::from_secs(1);

/// Answers readiness from a set of [`Probe`]s.
pub struct HealthService {
    /// Each probe, and whether the instance can serve without its dependency.
    probes: Vec<(Arc<dyn Probe>, bool)>,
}

impl HealthService {
    /// Reports on these dependencies: `essential` ones (the database) make
    /// the instance unavailable when down; `optional` ones (a cache whose
    /// loss only costs speed) make it degraded.
    pub fn new(essential: Vec<Arc<dyn Probe>>, optional: Vec<Arc<dyn Probe>>) -> Self {
        let essential = essential.into_iter().map(|probe| (probe, false));
        let optional = optional.into_iter().map(|probe| (probe, true));
        Self {
            probes: essential.chain(optional).collect(),
        }
    }
}

impl std::fmt::Debug for HealthService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<_> = self.probes.iter().map(|(probe, _)| probe.name()).collect();
        f.debug_struct("HealthService")
            .field("probes", &names)
            .finish()
    }
}

#[async_trait]
impl HealthUseCases for HealthService {
    async fn readiness(&self) -> Vec<DependencyStatus> {
        let pings = self.probes.iter().map(|(probe, optional)| async move {
            let answer = tokio::time::timeout(PING_DEADLINE, probe.ping()).await;
            let state = match answer {
                Ok(Ok(())) => DependencyState::Ready,
                _ if *optional => DependencyState::Degraded,
                _ => DependencyState::Unavailable,
            };
            if state != DependencyState::Ready {
                tracing::warn!(
                    dependency = probe.name(),
                    ?answer,
                    ?state,
                    "dependency is not ready"
                );
            }
            DependencyStatus {
                name: probe.name(),
                state,
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

    fn status(name: &'static str, state: DependencyState) -> DependencyStatus {
        DependencyStatus { name, state }
    }

    #[tokio::test]
    async fn an_optional_dependency_down_degrades_an_essential_one_makes_unavailable() {
        let health = HealthService::new(
            vec![probe("database", true), probe("queue", false)],
            vec![probe("cache", false), probe("other cache", true)],
        );
        assert_eq!(
            health.readiness().await,
            [
                status("database", DependencyState::Ready),
                status("queue", DependencyState::Unavailable),
                status("cache", DependencyState::Degraded),
                status("other cache", DependencyState::Ready),
            ]
        );
    }
}
