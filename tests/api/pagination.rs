use std::collections::HashSet;

use test_support::{Backend, TaskBody, TestApp, assert_problem, spawn_app};
use uuid::Uuid;

on_every_backend!(
    following_next_links_visits_every_task_once_in_id_order,
    the_default_page_holds_fifty_tasks,
    limits_outside_one_to_a_thousand_are_refused,
    a_page_starting_after_an_unknown_id_continues_from_there,
);

/// Inserts `count` tasks in one statement, bypassing the API, and returns their ids.
async fn seed(app: &TestApp, count: usize) -> Vec<Uuid> {
    let ids: Vec<Uuid> = (0..count).map(|_| Uuid::now_v7()).collect();
    let values: Vec<String> = ids
        .iter()
        .enumerate()
        .map(|(index, id)| format!("({}, 'seeded {index}')", app.database.backend().uuid_literal(*id)))
        .collect();
    app.database
        .execute(format!("INSERT INTO tasks (id, name) VALUES {}", values.join(",")))
        .await;
    ids
}

fn next_link(response: &reqwest::Response) -> Option<String> {
    let link = response.headers().get("link")?.to_str().expect("ASCII");
    let (target, relation) = link.split_once(';').expect("<target>; rel");
    assert_eq!(relation.trim(), r#"rel="next""#);
    Some(target.trim().trim_start_matches('<').trim_end_matches('>').to_owned())
}

async fn following_next_links_visits_every_task_once_in_id_order(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut expected = seed(&app, 95).await;
    expected.sort();

    let mut seen = Vec::new();
    let mut next = Some("/tasks?limit=10".to_owned());
    let mut pages = 0;
    while let Some(path) = next {
        let response = app.get(&path).await;
        assert_eq!(response.status(), 200);
        next = next_link(&response);
        let page: Vec<TaskBody> = response.json().await.expect("tasks");
        assert!(page.len() <= 10);
        seen.extend(page.iter().map(|task| task.id));
        pages += 1;
    }

    assert_eq!(pages, 10);
    assert_eq!(seen, expected, "every task once, in id order");
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 95);
}

async fn the_default_page_holds_fifty_tasks(backend: Backend) {
    let app = spawn_app(backend).await;
    seed(&app, 51).await;

    let response = app.get("/tasks").await;

    let next = next_link(&response).expect("a next link");
    assert!(next.starts_with("/tasks?limit=50&after="), "{next}");
    assert_eq!(response.json::<Vec<TaskBody>>().await.expect("tasks").len(), 50);
    let last: Vec<TaskBody> = app.get(&next).await.json().await.expect("tasks");
    assert_eq!(last.len(), 1);
}

async fn limits_outside_one_to_a_thousand_are_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    seed(&app, 3).await;

    for bad in ["0", "1001", "-1", "ten", "99999999999999999999999"] {
        assert_problem(app.get(&format!("/tasks?limit={bad}")).await, 400, "invalid_query").await;
    }
    let page: Vec<TaskBody> = app.get("/tasks?limit=1000").await.json().await.expect("tasks");
    assert_eq!(page.len(), 3);
}

async fn a_page_starting_after_an_unknown_id_continues_from_there(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut ids = seed(&app, 5).await;
    ids.sort();
    // Deleted between two page requests: the next page still starts at the right place.
    assert_eq!(app.delete_task(ids[1]).await.status(), 204);

    let page: Vec<TaskBody> = app
        .get(&format!("/tasks?after={}", ids[1]))
        .await
        .json()
        .await
        .expect("tasks");

    let listed: Vec<Uuid> = page.iter().map(|task| task.id).collect();
    assert_eq!(listed, ids[2..]);
}
