//! The parts of the OpenAPI document that are not collected from the routes.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::error::{FieldProblem, Problem};
use crate::responses::ProblemResponses;

/// The document's header: metadata and conventions, tags, shared schemas and
/// responses, and the bearer scheme.
#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "Waiter",
        description = include_str!("conventions.md"),
        license(name = "MIT OR Apache-2.0", identifier = "MIT OR Apache-2.0"),
    ),
    modifiers(&BearerScheme, &ProblemResponses),
    components(schemas(Problem, FieldProblem)),
    tags(
        (name = "accounts", description = "Sign up, manage your account, administer accounts"),
        (name = "sessions", description = "Sign in, refresh tokens, sign out"),
        (name = "books", description = "The books catalog: public reads, owner-or-admin writes"),
        (name = "conversations", description = "Conversations with the assistant, whose replies stream back as Server-Sent Events"),
        (name = "compatibility", description = "Compatibility (seed API): the product brief's own conversation endpoints and bodies, as aliases over the conversations"),
        (name = "operations", description = "Liveness and readiness probes"),
    )
)]
pub struct ApiDoc;

/// Declares the `bearer` security scheme the protected operations refer to.
struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some("An access token from `POST /api/v1/sessions`"))
                    .build(),
            ),
        );
    }
}
