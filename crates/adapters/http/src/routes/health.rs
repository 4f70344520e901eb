//! Liveness and readiness probes, outside the versioned API.

use actix_web::{HttpResponse, get, web};
use waiter_ports::health::HealthUseCases;

use crate::dto::HealthBody;

fn word(ready: bool) -> &'static str {
    if ready { "ok" } else { "unavailable" }
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
        (status = 200, description = "Ready to serve", body = HealthBody),
        (status = 503, description = "A dependency is unreachable", body = HealthBody),
    )
)]
#[get("/readyz")]
pub async fn readiness(health: web::Data<dyn HealthUseCases>) -> HttpResponse {
    let report = health.readiness().await;
    let ready = report.iter().all(|dependency| dependency.ready);
    let body = HealthBody {
        status: word(ready),
        checks: report.iter().map(|d| (d.name, word(d.ready))).collect(),
    };
    if ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}
