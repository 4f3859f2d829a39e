//! The OpenAPI 3.1 description of the service, generated from the handlers themselves.

use utoipa::openapi::{Content, Ref, RefOr};
use utoipa::{Modify, OpenApi, ToSchema};

use crate::error::{PROBLEM_JSON, Problem};
use crate::routes::{health, tasks};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Tasks API",
        description = "Tasks stored in PostgreSQL or SQLite. Every error is an RFC 9457 application/problem+json body."
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
            ("get /tasks", vec!["200", "400", "503"]),
            ("post /tasks", vec!["201", "400", "413", "415", "422", "503"]),
            ("get /tasks/{id}", vec!["200", "400", "404"]),
            ("put /tasks/{id}", vec!["200", "400", "404", "422"]),
            ("delete /tasks/{id}", vec!["204", "400", "404"]),
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
}
