//! The OpenAPI document, generated from the handlers' annotations and the model's types.

use axum::response::IntoResponse;
use utoipa::OpenApi;

use crate::{
    api_gateway_handlers, domain_handlers, handlers, hosting_handlers, iam_handlers,
    image_handlers, metrics_handlers, operation_handlers,
};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Pier admin API",
        description = "Deploy services, manage revisions and traffic, read logs. Every /v1 call needs `Authorization: Bearer <token>`."
    ),
    paths(
        handlers::info,
        metrics_handlers::metrics,
        metrics_handlers::history,
        operation_handlers::get_operation,
        handlers::list_services,
        handlers::get_service,
        handlers::delete_service,
        handlers::update_service,
        handlers::deploy,
        handlers::update_traffic,
        handlers::logs,
        handlers::list_revisions,
        handlers::get_revision,
        handlers::delete_revision,
        iam_handlers::whoami,
        iam_handlers::get_service_policy,
        iam_handlers::set_service_policy,
        iam_handlers::add_service_binding,
        iam_handlers::remove_service_binding,
        iam_handlers::get_installation_policy,
        iam_handlers::set_installation_policy,
        iam_handlers::add_installation_binding,
        iam_handlers::remove_installation_binding,
        iam_handlers::get_project_policy,
        iam_handlers::set_project_policy,
        iam_handlers::add_project_binding,
        iam_handlers::remove_project_binding,
        iam_handlers::get_sa_policy,
        iam_handlers::set_sa_policy,
        iam_handlers::add_sa_binding,
        iam_handlers::remove_sa_binding,
        iam_handlers::list_service_accounts,
        iam_handlers::create_service_account,
        iam_handlers::get_service_account,
        iam_handlers::delete_service_account,
        iam_handlers::disable_service_account,
        iam_handlers::enable_service_account,
        iam_handlers::list_keys,
        iam_handlers::create_key,
        iam_handlers::delete_key,
        iam_handlers::disable_key,
        iam_handlers::enable_key,
        iam_handlers::generate_id_token,
        iam_handlers::list_users,
        iam_handlers::create_user,
        iam_handlers::delete_user,
        image_handlers::list_images,
        image_handlers::prune_images,
        image_handlers::list_registries,
        image_handlers::set_registry,
        image_handlers::delete_registry,
        domain_handlers::list_domains,
        domain_handlers::verify_domain,
        domain_handlers::list_mappings,
        domain_handlers::create_mapping,
        domain_handlers::get_mapping,
        domain_handlers::delete_mapping,
        api_gateway_handlers::list_apis,
        api_gateway_handlers::create_api,
        api_gateway_handlers::get_api,
        api_gateway_handlers::delete_api,
        api_gateway_handlers::list_configs,
        api_gateway_handlers::create_config,
        api_gateway_handlers::get_config,
        api_gateway_handlers::delete_config,
        api_gateway_handlers::list_gateways,
        api_gateway_handlers::create_gateway,
        api_gateway_handlers::get_gateway,
        api_gateway_handlers::update_gateway,
        api_gateway_handlers::delete_gateway,
        api_gateway_handlers::list_keys,
        api_gateway_handlers::create_key,
        api_gateway_handlers::get_key,
        api_gateway_handlers::update_key,
        api_gateway_handlers::delete_key,
        api_gateway_handlers::undelete_key,
        api_gateway_handlers::rotate_key,
        hosting_handlers::list_sites,
        hosting_handlers::get_site,
        hosting_handlers::delete_site,
        hosting_handlers::create_version,
        hosting_handlers::upload_file,
        hosting_handlers::list_releases,
        hosting_handlers::release,
        hosting_handlers::clone_channel,
        hosting_handlers::delete_channel,
        hosting_handlers::rollback,
        hosting_handlers::invalidate,
        hosting_handlers::invalidate_service,
    ),
    components(schemas(pier_model::api::ErrorBody)),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
pub(crate) struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// `GET /openapi.json`.
pub(crate) async fn document() -> impl IntoResponse {
    (
        [("content-type", "application/json")],
        ApiDoc::openapi().to_pretty_json().unwrap_or_default(),
    )
}
