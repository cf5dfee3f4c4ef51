//! Reading documents: Google's bookstore style (2.0), OpenAPI 3, and faults with their pointers.

use super::*;

pub(crate) const BOOKSTORE: &str = r##"
swagger: "2.0"
info: {title: Bookstore, version: "1.0.0"}
host: bookstore.endpoints.example.cloud.goog
basePath: /v1
x-google-backend:
  address: https://books-abc123.pier.localhost:8443
x-pier-validate: true
securityDefinitions:
  api_key: {type: apiKey, name: key, in: query}
  pier_jwt:
    type: oauth2
    flow: implicit
    authorizationUrl: ""
    x-google-issuer: https://pier.localhost:8443
    x-google-audiences: shop-api
x-google-management:
  metrics:
    - {name: read-requests, displayName: Reads, valueType: INT64, metricKind: DELTA}
  quota:
    limits:
      - {name: read-limit, metric: read-requests, unit: "1/min/{project}", values: {STANDARD: 5}}
security:
  - api_key: []
paths:
  /shelves:
    get:
      operationId: listShelves
      security: []
      parameters:
        - {name: limit, in: query, type: integer, minimum: 1, maximum: 100}
    post:
      operationId: createShelf
      security:
        - api_key: []
          pier_jwt: []
      parameters:
        - {name: shelf, in: body, required: true, schema: {$ref: "#/definitions/Shelf"}}
  /shelves/{shelf}:
    parameters:
      - {name: shelf, in: path, required: true, type: integer, format: int64}
    get:
      operationId: getShelf
      x-google-quota: {metricCosts: {read-requests: 1}}
      x-google-backend:
        address: https://books-abc123.pier.localhost:8443/getShelf
        deadline: 2.5
definitions:
  Shelf:
    type: object
    additionalProperties: false
    required: [theme, id]
    properties:
      id: {type: integer, readOnly: true}
      theme: {type: string, minLength: 1}
      note: {type: string, x-nullable: true}
"##;

#[test]
fn reads_a_bookstore_style_document() {
    let s = ApiSpec::parse(BOOKSTORE).unwrap();
    assert_eq!(s.version, OasVersion::Swagger2);
    assert_eq!(
        s.service_name.as_deref(),
        Some("bookstore.endpoints.example.cloud.goog")
    );
    assert_eq!(s.operations.len(), 3);
    let op = |id: &str| s.operations.iter().find(|o| o.id == id).unwrap();
    assert_eq!(op("listShelves").template, "/v1/shelves");
    assert!(op("listShelves").security.is_empty());
    assert_eq!(op("getShelf").security, vec![vec!["api_key".to_owned()]]);
    assert_eq!(
        op("createShelf").security,
        vec![vec!["api_key".to_owned(), "pier_jwt".to_owned()]]
    );
    let b = op("getShelf").backend.as_ref().unwrap();
    assert_eq!(b.translation, PathTranslation::ConstantAddress);
    assert_eq!(b.deadline, std::time::Duration::from_millis(2500));
    let top = op("listShelves").backend.as_ref().unwrap();
    assert_eq!(top.translation, PathTranslation::AppendPathToAddress);
    assert_eq!(s.limits.get("read-requests"), Some(&5));
    assert_eq!(op("getShelf").costs, vec![("read-requests".to_owned(), 1)]);
    match &s.schemes["pier_jwt"] {
        SecurityScheme::Jwt(j) => {
            assert_eq!(j.audiences, vec!["shop-api"]);
            assert_eq!(j.locations, default_jwt_locations());
        }
        other => panic!("{other:?}"),
    }
    assert!(s.warnings.is_empty(), "{:?}", s.warnings);
    assert!(op("createShelf").checks.is_some());
}

#[test]
fn reads_openapi_3_with_its_own_places() {
    let s = ApiSpec::parse(
        r#"{"openapi": "3.0.3", "info": {"title": "t", "version": "1"},
        "servers": [{"url": "https://api.example.com"}],
        "x-google-backend": {"address": "http://127.0.0.1:9"},
        "components": {"securitySchemes": {
            "k": {"type": "apiKey", "name": "X-Key", "in": "header"},
            "fb": {"type": "oauth2", "flows": {}, "x-google-auth": {"issuer": "https://securetoken.google.com/p", "jwksUri": "https://www.googleapis.com/x", "audiences": ["p"]}}}},
        "paths": {"/items/{id}": {"get": {"security": [{"k": []}, {"fb": []}], "x-google-quota": {"metricCosts": {"m": 1}}}}}}"#,
    )
    .unwrap();
    assert_eq!(s.version, OasVersion::OpenApi30);
    assert_eq!(s.service_name.as_deref(), Some("api.example.com"));
    assert_eq!(
        s.schemes["k"],
        SecurityScheme::ApiKey(vec![
            KeyLocation::Header("x-key".into()),
            KeyLocation::Query("key".into()),
            KeyLocation::Query("api_key".into()),
            KeyLocation::Header("x-api-key".into()),
        ])
    );
    assert!(matches!(&s.schemes["fb"], SecurityScheme::Jwt(j) if j.audiences == ["p"]));
    // Costs without a limit are warned about.
    assert!(
        s.warnings.iter().any(|w| w.contains("`m` has no limit")),
        "{:?}",
        s.warnings
    );
}

#[test]
fn faults_name_their_pointer_and_line() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "swagger: '2.0'\ninfo: {title: t}\npaths: {}\n",
            "/paths",
            "no operation",
        ),
        (
            "openapi: 4.0.0\npaths: {}\n",
            "/openapi",
            "unsupported version",
        ),
        ("info: {}\n", "", "not an OpenAPI document"),
        (
            "swagger: '2.0'\npaths:\n  /a:\n    get:\n      x-google-backend: {address: 'ftp://x'}\n",
            "/paths/~1a/get/x-google-backend/address",
            "http://",
        ),
        (
            "swagger: '2.0'\nx-google-management: {quota: {limits: [{metric: m, unit: '1/d/{project}', values: {STANDARD: 1}}]}}\npaths: {/a: {get: {}}}\n",
            "/x-google-management/quota/limits/0/unit",
            "1/min/{project}",
        ),
        (
            "swagger: '2.0'\nx-pier-validate: true\npaths:\n  /a:\n    post:\n      parameters: [{name: b, in: body, schema: {$ref: 'https://evil.example/s.json'}}]\n",
            "/paths/~1a/post/parameters/0/schema/$ref",
            "never makes the server fetch",
        ),
        (
            "swagger: '2.0'\nsecurityDefinitions: {b: {type: basic}}\npaths: {/a: {get: {}}}\n",
            "/securityDefinitions/b",
            "x-google-issuer",
        ),
    ];
    for (doc, pointer, says) in cases {
        let e = ApiSpec::parse(doc).unwrap_err();
        assert_eq!(e.pointer, *pointer, "{doc}: {e}");
        assert!(e.reason.contains(says), "{doc}: {e}");
    }
    let e = ApiSpec::parse("swagger: '2.0'\npaths:\n  /a: [\n").unwrap_err();
    assert!(e.line.is_some(), "{e}");
    let e = ApiSpec::parse("{\"swagger\": \"2.0\",\n \"paths\": }").unwrap_err();
    assert_eq!(e.line, Some(2), "{e}");
}

#[test]
fn undefined_schemes_and_missing_backends_are_warnings() {
    let s =
        ApiSpec::parse("swagger: '2.0'\npaths:\n  /a:\n    get:\n      security: [{nope: []}]\n")
            .unwrap();
    assert!(
        s.warnings
            .iter()
            .any(|w| w.contains("`nope` is not defined"))
    );
    assert!(s.warnings.iter().any(|w| w.contains("no x-google-backend")));
}

#[test]
fn openapi_schemas_become_json_schema() {
    let t = schema::translate(
        &serde_json::json!({"type": "object", "nullable": true, "required": ["id", "n"],
            "discriminator": {"propertyName": "kind"},
            "properties": {"id": {"type": "integer", "readOnly": true}, "n": {"$ref": "#/components/schemas/N"},
                "f": {"type": "file"}}}),
        "",
        OasVersion::OpenApi30,
    )
    .unwrap();
    assert_eq!(t["type"], serde_json::json!(["object", "null"]));
    assert_eq!(t["required"], serde_json::json!(["n"]));
    assert_eq!(t["properties"]["n"]["$ref"], "#/definitions/N");
    assert!(t.get("discriminator").is_none());
    assert!(t["properties"]["f"].get("type").is_none());
}
