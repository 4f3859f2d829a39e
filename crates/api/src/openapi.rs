//! The OpenAPI 3.1 description of the service, generated from the handlers themselves.

use utoipa::openapi::{Content, Ref, RefOr};
use utoipa::{Modify, OpenApi, ToSchema};

use crate::error::{PROBLEM_JSON, Problem};
use crate::routes::{health, tasks};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Tasks API",
        description = "Tasks stored in PostgreSQL, MySQL, MariaDB or SQLite. Every error is an RFC 9457 \
                       application/problem+json body. A path answers 405 with `Allow` to every method it does not \
                       serve, and serves HEAD wherever it serves GET."
    ),
    paths(
        tasks::list_tasks,
        tasks::create_task,
        tasks::get_task,
        tasks::rename_task,
        tasks::delete_task,
        health::live,
        health::ready
    ),
    components(schemas(Problem)),
    modifiers(&ProblemBodies),
    tags((name = "tasks", description = "Create, read, rename and delete tasks"), (name = "health", description = "Probes"))
)]
pub(crate) struct ApiDoc;

/// Gives every 4xx and 5xx response an operation lists its body: a [`Problem`] as `application/problem+json`, which
/// is all an `ApiError` ever sends. Declared here once, so operations list an error status with what it means for
/// them and nothing else, and none can describe an error body that the service does not send.
struct ProblemBodies;

impl Modify for ProblemBodies {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let problem = Content::new(Some(Ref::from_schema_name(Problem::name())));
        for item in openapi.paths.paths.values_mut() {
            // The verbs the service serves; the test below walks the whole document, so one added later is caught.
            let operations = [&mut item.get, &mut item.post, &mut item.put, &mut item.delete];
            for operation in operations.into_iter().flatten() {
                for (status, response) in &mut operation.responses.responses {
                    if let (Some('4' | '5'), RefOr::T(response)) = (status.chars().next(), response) {
                        response
                            .content
                            .insert(PROBLEM_JSON.to_owned(), RefOr::T(problem.clone()));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use domain::{PageLimit, TaskName};
    use serde_json::{Value, json};

    use super::*;

    fn document() -> Value {
        serde_json::to_value(ApiDoc::openapi()).expect("the document serialises")
    }

    /// Each operation's statuses, read from the document: the contract clients generate code from.
    fn statuses(document: &Value) -> BTreeMap<String, Vec<&str>> {
        let paths = document["paths"].as_object().expect("paths");
        paths
            .iter()
            .flat_map(|(path, item)| {
                let operations = item.as_object().expect("a path item");
                operations.iter().map(move |(verb, operation)| {
                    let responses = operation["responses"].as_object().expect("responses");
                    (format!("{verb} {path}"), responses.keys().map(String::as_str).collect())
                })
            })
            .collect()
    }

    #[test]
    fn every_operation_documents_its_statuses() {
        let document = document();

        assert!(document["openapi"].as_str().expect("version").starts_with("3.1"));
        let expected = [
            ("get /health/live", vec!["200"]),
            ("get /health/ready", vec!["200", "503"]),
            ("get /tasks", vec!["200", "400", "500", "503"]),
            (
                "post /tasks",
                vec!["200", "201", "400", "409", "413", "415", "422", "500", "503"],
            ),
            ("get /tasks/{id}", vec!["200", "400", "404", "500", "503"]),
            (
                "put /tasks/{id}",
                vec!["200", "400", "404", "413", "415", "422", "500", "503"],
            ),
            ("delete /tasks/{id}", vec!["204", "400", "404", "500", "503"]),
        ]
        .map(|(operation, codes)| (operation.to_owned(), codes));
        assert_eq!(statuses(&document), BTreeMap::from(expected));
    }

    #[test]
    fn every_error_response_is_a_problem_and_nothing_else() {
        let document = document();
        let problem = json!({ PROBLEM_JSON: { "schema": { "$ref": "#/components/schemas/Problem" } } });

        for (operation, codes) in statuses(&document) {
            let (verb, path) = operation.split_once(' ').expect("verb and path");
            for code in codes.into_iter().filter(|code| code.starts_with(['4', '5'])) {
                let response = &document["paths"][path][verb]["responses"][code];
                assert_eq!(response["content"], problem, "{operation} {code}");
                assert!(
                    !response["description"].as_str().unwrap_or_default().is_empty(),
                    "{operation} {code} says what it means"
                );
            }
        }
        assert_eq!(document["components"]["schemas"]["Problem"]["type"], "object");
    }

    /// Every `$ref` in `value`.
    fn references(value: &Value) -> Vec<&str> {
        match value {
            Value::Object(object) => object
                .iter()
                .flat_map(|(key, value)| match (key.as_str(), value) {
                    ("$ref", Value::String(reference)) => vec![reference.as_str()],
                    _ => references(value),
                })
                .collect(),
            Value::Array(items) => items.iter().flat_map(references).collect(),
            _ => Vec::new(),
        }
    }

    #[test]
    fn every_reference_resolves_within_the_document() {
        let document = document();

        let references = references(&document);
        assert!(references.contains(&"#/components/schemas/Ready"), "{references:?}");
        for reference in references {
            let pointer = reference.strip_prefix('#').expect("a reference within the document");
            assert!(document.pointer(pointer).is_some(), "{reference} resolves");
        }
    }

    /// The parameter of `verb path` named `name`.
    fn parameter<'a>(document: &'a Value, verb: &str, path: &str, name: &str) -> &'a Value {
        let parameters = document["paths"][path][verb]["parameters"]
            .as_array()
            .expect("parameters");
        let found = parameters.iter().find(|parameter| parameter["name"] == name);
        found.unwrap_or_else(|| panic!("{verb} {path} declares {name}"))
    }

    #[test]
    fn page_bounds_are_declared_as_the_domain_enforces_them() {
        let document = document();

        let limit = parameter(&document, "get", "/tasks", "limit");
        assert_eq!(limit["in"], "query");
        assert_eq!(limit["required"], false);
        assert_eq!(limit["schema"]["type"], "integer");
        assert_eq!(limit["schema"]["minimum"], 1);
        assert_eq!(limit["schema"]["maximum"], PageLimit::MAX);
        assert_eq!(limit["schema"]["default"], PageLimit::DEFAULT.get());
        let after = parameter(&document, "get", "/tasks", "after");
        assert_eq!(after["schema"]["format"], "uuid");
    }

    #[test]
    fn name_rules_are_declared_as_the_domain_enforces_them() {
        let document = document();

        // The request bodies, and the names the service sends back.
        for schema in ["TaskPayload", "TaskResource"] {
            let name = &document["components"]["schemas"][schema]["properties"]["name"];
            assert_eq!(name["type"], "string", "{schema}");
            assert_eq!(name["minLength"], 1, "{schema}");
            assert_eq!(name["maxLength"], TaskName::MAX_CHARS, "{schema}");
            assert_eq!(name["pattern"], TaskName::PATTERN, "{schema}");
            let required = document["components"]["schemas"][schema]["required"].as_array();
            assert!(required.expect("required").contains(&json!("name")), "{schema}");
        }
    }

    #[test]
    fn a_created_task_links_to_the_operations_on_its_id() {
        let document = document();
        let operation_ids: Vec<&str> = statuses(&document)
            .keys()
            .filter_map(|operation| {
                let (verb, path) = operation.split_once(' ')?;
                document["paths"][path][verb]["operationId"].as_str()
            })
            .collect();

        // The full answer carries the id in its body; the minimal one is the id.
        for (status, id) in [("201", "$response.body#/id"), ("200", "$response.body")] {
            let links = &document["paths"]["/tasks"]["post"]["responses"][status]["links"];
            for (link, operation) in [
                ("GetTask", "get_task"),
                ("RenameTask", "rename_task"),
                ("DeleteTask", "delete_task"),
            ] {
                assert_eq!(links[link]["operationId"], operation, "{status} {link}");
                assert_eq!(links[link]["parameters"], json!({ "id": id }), "{status} {link}");
                assert!(
                    operation_ids.contains(&operation),
                    "{operation} is an operation of the document"
                );
            }
        }
    }

    #[test]
    fn prefer_return_minimal_and_its_answer_are_declared() {
        let document = document();

        let prefer = parameter(&document, "post", "/tasks", "Prefer");
        assert_eq!(prefer["in"], "header");
        assert_eq!(prefer["required"], false);
        let minimal = &document["paths"]["/tasks"]["post"]["responses"]["200"];
        assert_eq!(
            minimal["content"],
            json!({ "application/json": { "schema": { "type": "string", "format": "uuid" } } })
        );
        for header in ["Location", "Preference-Applied"] {
            assert_eq!(minimal["headers"][header]["schema"]["type"], "string", "{header}");
        }
        let full = &document["paths"]["/tasks"]["post"]["responses"]["201"];
        assert_eq!(
            full["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/TaskResource"
        );
    }
}
