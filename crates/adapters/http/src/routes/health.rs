//! Liveness and readiness probes, outside the versioned API.

use actix_web::{HttpResponse, get, web};
use waiter_ports::health::{DependencyState, HealthUseCases};

use crate::dto::HealthBody;

fn word(state: DependencyState) -> &'static str {
    match state {
        DependencyState::Ready => "ok",
        DependencyState::Degraded => "degraded",
        DependencyState::Unavailable => "unavailable",
    }
}

/// Liveness: the process is up and serving HTTP.
#[utoipa::path(tag = "operations", responses((status = 200, description = "Alive", body = HealthBody)))]
#[get("/healthz")]
pub async fn liveness() -> HttpResponse {
    HttpResponse::Ok().json(HealthBody {
        status: "ok",
        checks: Default::default(),
    })
}

/// Readiness: the database and the cache answer.
#[utoipa::path(
    tag = "operations",
    responses(
        (status = 200, description = "Ready to serve (perhaps degraded: without its cache)", body = HealthBody),
        (status = 503, description = "A dependency is unreachable", body = HealthBody),
    )
)]
#[get("/readyz")]
pub async fn readiness(health: web::Data<dyn HealthUseCases>) -> HttpResponse {
    let report = health.readiness().await;
    // The worst state of any dependency is the server's.
    let overall = [DependencyState::Unavailable, DependencyState::Degraded]
        .into_iter()
        .find(|state| report.iter().any(|d| d.state == *state))
        .unwrap_or(DependencyState::Ready);
    let body = HealthBody {
        status: word(overall),
        checks: report.iter().map(|d| (d.name, word(d.state))).collect(),
    };
    if overall != DependencyState::Unavailable {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}
