//! The room directory: aliases, local alias lists, directory visibility and /publicRooms.

mod common;

use common::*;
use serde_json::{Value, json};

fn alias_path(alias: &str) -> String {
    format!("/_matrix/client/v3/directory/room/{}", enc(alias))
}

fn visibility_path(room: &str) -> String {
    format!("/_matrix/client/v3/directory/list/room/{}", enc(room))
}

async fn delete(srv: &TestServer, path: &str, u: &User) -> (u16, Value) {
    srv.request("DELETE", path, Some(&u.token), None).await
}

#[tokio::test]
async fn alias_create_resolve_and_conflict() {
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    let bob = srv.register("bob").await;
    let room = srv.create_room(&alice, json!({})).await;

    let (s, b) = srv
        .put(
            &alias_path("#lounge:localhost"),
            &alice,
            json!({"room_id": room}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b, json!({}));

    // Taken: 409 M_UNKNOWN, whoever asks and wherever it would point.
    let (s, b) = srv
        .put(
            &alias_path("#lounge:localhost"),
            &alice,
            json!({"room_id": room}),
        )
        .await;
    assert_eq!((s, b["errcode"].as_str()), (409, Some("M_UNKNOWN")), "{b}");

    // Resolving needs no access token.
    let (s, b) = srv
        .request("GET", &alias_path("#lounge:localhost"), None, None)
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["room_id"], json!(room));
    assert_eq!(b["servers"], json!(["localhost"]));

    let (s, b) = srv.get(&alias_path("#nowhere:localhost"), &bob).await;
    assert_eq!(
        (s, b["errcode"].as_str()),
        (404, Some("M_NOT_FOUND")),
        "{b}"
    );
    let (s, b) = srv
        .get(&alias_path("#lounge:elsewhere.example"), &bob)
        .await;
    assert_eq!(
        (s, b["errcode"].as_str()),
        (404, Some("M_NOT_FOUND")),
        "{b}"
    );

    // A non-member may not point aliases at the room.
    let (s, b) = srv
        .put(
            &alias_path("#bobs:localhost"),
            &bob,
            json!({"room_id": room}),
        )
        .await;
    assert_eq!(
        (s, b["errcode"].as_str()),
        (403, Some("M_FORBIDDEN")),
        "{b}"
    );
    let (s, _) = srv.get(&alias_path("#bobs:localhost"), &bob).await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn alias_bad_input() {
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    let room = srv.create_room(&alice, json!({})).await;

    for bad in ["lounge", "#nocolon", "!room:localhost", "#:"] {
        let (s, b) = srv
            .put(&alias_path(bad), &alice, json!({"room_id": room}))
            .await;
        assert_eq!(
            (s, b["errcode"].as_str()),
            (400, Some("M_INVALID_PARAM")),
            "{bad}: {b}"
        );
        let (s, b) = srv.get(&alias_path(bad), &alice).await;
        assert_eq!(
            (s, b["errcode"].as_str()),
            (400, Some("M_INVALID_PARAM")),
            "{bad}: {b}"
        );
    }
    // Aliases of other servers cannot be created here.
    let (s, b) = srv
        .put(
            &alias_path("#x:elsewhere.example"),
            &alice,
            json!({"room_id": room}),
        )
        .await;
    assert_eq!(
        (s, b["errcode"].as_str()),
        (400, Some("M_INVALID_PARAM")),
        "{b}"
    );
    let (s, b) = srv
        .put(
            &alias_path("#x:localhost"),
            &alice,
            json!({"room_id": "not a room"}),
        )
        .await;
    assert_eq!(
        (s, b["errcode"].as_str()),
        (400, Some("M_INVALID_PARAM")),
        "{b}"
    );
    let (s, b) = srv
        .put(&alias_path("#x:localhost"), &alice, json!({}))
        .await;
    assert_eq!(
        (s, b["errcode"].as_str()),
        (400, Some("M_MISSING_PARAM")),
        "{b}"
    );
    let (s, b) = srv
        .put(&alias_path("#x:localhost"), &alice, json!({"room_id": 5}))
        .await;
    assert_eq!((s, b["errcode"].as_str()), (400, Some("M_BAD_JSON")), "{b}");
    let (s, b) = srv
        .request(
            "PUT",
            &alias_path("#x:localhost"),
            None,
            Some(json!({"room_id": room})),
        )
        .await;
    assert_eq!(
        (s, b["errcode"].as_str()),
        (401, Some("M_MISSING_TOKEN")),
        "{b}"
    );
    // Unknown rooms: nobody is joined to them.
    let (s, b) = srv
        .put(
            &alias_path("#x:localhost"),
            &alice,
            json!({"room_id": "!unknown:localhost"}),
        )
        .await;
    assert_eq!(s, 403, "{b}");
}

#[tokio::test]
async fn alias_delete_permissions_and_canonical_alias() {
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    let bob = srv.register("bob").await;
    let carol = srv.register("carol").await;
    let room = srv
        .create_room(&alice, json!({"preset": "public_chat"}))
        .await;
    srv.join(&bob, &room).await;
    srv.join(&carol, &room).await;

    for (who, alias) in [(&bob, "#bob1:localhost"), (&bob, "#bob2:localhost")] {
        let (s, b) = srv
            .put(&alias_path(alias), who, json!({"room_id": room}))
            .await;
        assert_eq!(s, 200, "{b}");
    }
    // Neither creator nor moderator.
    let (s, b) = delete(&srv, &alias_path("#bob1:localhost"), &carol).await;
    assert_eq!(
        (s, b["errcode"].as_str()),
        (403, Some("M_FORBIDDEN")),
        "{b}"
    );
    // The creator may delete their alias.
    let (s, b) = delete(&srv, &alias_path("#bob1:localhost"), &bob).await;
    assert_eq!(s, 200, "{b}");
    let (s, _) = srv.get(&alias_path("#bob1:localhost"), &bob).await;
    assert_eq!(s, 404);
    let (s, b) = delete(&srv, &alias_path("#bob1:localhost"), &bob).await;
    assert_eq!(
        (s, b["errcode"].as_str()),
        (404, Some("M_NOT_FOUND")),
        "{b}"
    );

    // A user who may set the canonical alias may delete others' aliases, and the canonical alias
    // stops naming the deleted alias.
    let state_path = format!(
        "/_matrix/client/v3/rooms/{}/state/m.room.canonical_alias/",
        enc(&room)
    );
    let (s, b) = srv
        .put(
            &state_path,
            &alice,
            json!({"alias": "#bob2:localhost", "alt_aliases": ["#bob2:localhost"]}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = delete(&srv, &alias_path("#bob2:localhost"), &alice).await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = srv.get(&state_path, &alice).await;
    assert_eq!(s, 200, "{b}");
    assert!(b.get("alias").is_none(), "{b}");
    assert_eq!(b["alt_aliases"], json!([]), "{b}");

    let (s, b) = delete(&srv, &alias_path("not-an-alias"), &alice).await;
    assert_eq!(
        (s, b["errcode"].as_str()),
        (400, Some("M_INVALID_PARAM")),
        "{b}"
    );
}

#[tokio::test]
async fn local_aliases_of_a_room() {
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    let bob = srv.register("bob").await;
    let room = srv
        .create_room(&alice, json!({"room_alias_name": "first"}))
        .await;
    let (s, _) = srv
        .put(
            &alias_path("#second:localhost"),
            &alice,
            json!({"room_id": room}),
        )
        .await;
    assert_eq!(s, 200);
    let path = format!("/_matrix/client/v3/rooms/{}/aliases", enc(&room));
    let (s, b) = srv.get(&path, &alice).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        b["aliases"],
        json!(["#first:localhost", "#second:localhost"])
    );

    let (s, b) = srv.get(&path, &bob).await;
    assert_eq!(
        (s, b["errcode"].as_str()),
        (403, Some("M_FORBIDDEN")),
        "{b}"
    );
    let (s, b) = srv
        .get("/_matrix/client/v3/rooms/not-a-room/aliases", &bob)
        .await;
    assert_eq!(
        (s, b["errcode"].as_str()),
        (400, Some("M_INVALID_PARAM")),
        "{b}"
    );
    let (s, _) = srv
        .get(
            &format!(
                "/_matrix/client/v3/rooms/{}/aliases",
                enc("!unknown:localhost")
            ),
            &bob,
        )
        .await;
    assert_eq!(s, 403);

    // World-readable rooms show their aliases to anyone.
    let (s, b) = srv
        .put(
            &format!(
                "/_matrix/client/v3/rooms/{}/state/m.room.history_visibility/",
                enc(&room)
            ),
            &alice,
            json!({"history_visibility": "world_readable"}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = srv.get(&path, &bob).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["aliases"].as_array().map(Vec::len), Some(2));
}

#[tokio::test]
async fn directory_visibility() {
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    let bob = srv.register("bob").await;
    let room = srv
        .create_room(&alice, json!({"preset": "public_chat"}))
        .await;
    srv.join(&bob, &room).await;

    let (s, b) = srv
        .request("GET", &visibility_path(&room), None, None)
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b, json!({"visibility": "private"}));

    // Bob is joined but lacks the power to change the canonical alias.
    let (s, b) = srv
        .put(
            &visibility_path(&room),
            &bob,
            json!({"visibility": "public"}),
        )
        .await;
    assert_eq!(
        (s, b["errcode"].as_str()),
        (403, Some("M_FORBIDDEN")),
        "{b}"
    );

    // `visibility` defaults to public.
    let (s, b) = srv.put(&visibility_path(&room), &alice, json!({})).await;
    assert_eq!(s, 200, "{b}");
    let (_, b) = srv.get(&visibility_path(&room), &bob).await;
    assert_eq!(b, json!({"visibility": "public"}));
    let (s, _) = srv
        .put(
            &visibility_path(&room),
            &alice,
            json!({"visibility": "private"}),
        )
        .await;
    assert_eq!(s, 200);
    let (_, b) = srv.get(&visibility_path(&room), &bob).await;
    assert_eq!(b, json!({"visibility": "private"}));

    let (s, b) = srv
        .put(
            &visibility_path(&room),
            &alice,
            json!({"visibility": "secret"}),
        )
        .await;
    assert_eq!(
        (s, b["errcode"].as_str()),
        (400, Some("M_INVALID_PARAM")),
        "{b}"
    );
    let (s, b) = srv.get(&visibility_path("!unknown:localhost"), &bob).await;
    assert_eq!(
        (s, b["errcode"].as_str()),
        (404, Some("M_NOT_FOUND")),
        "{b}"
    );
    let (s, b) = srv
        .put(&visibility_path("!unknown:localhost"), &alice, json!({}))
        .await;
    assert_eq!(
        (s, b["errcode"].as_str()),
        (404, Some("M_NOT_FOUND")),
        "{b}"
    );
    let (s, b) = srv.get(&visibility_path("room"), &bob).await;
    assert_eq!(
        (s, b["errcode"].as_str()),
        (400, Some("M_INVALID_PARAM")),
        "{b}"
    );
    let (s, b) = srv
        .request(
            "PUT",
            &visibility_path(&room),
            None,
            Some(json!({"visibility": "public"})),
        )
        .await;
    assert_eq!(s, 401, "{b}");
}

fn room_ids(page: &Value) -> Vec<String> {
    page["chunk"]
        .as_array()
        .map(|c| {
            c.iter()
                .filter_map(|r| r["room_id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn public_rooms_listing_and_pagination() {
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    let bob = srv.register("bob").await;
    let carol = srv.register("carol").await;

    // Five published rooms of different sizes, one private room.
    let big = srv
        .create_room(
            &alice,
            json!({"visibility": "public", "preset": "public_chat", "name": "Big Hall",
                   "topic": "Everything", "room_alias_name": "hall"}),
        )
        .await;
    srv.join(&bob, &big).await;
    srv.join(&carol, &big).await;
    let medium = srv
        .create_room(
            &alice,
            json!({"visibility": "public", "preset": "public_chat", "name": "Gardening"}),
        )
        .await;
    srv.join(&bob, &medium).await;
    let space = srv
        .create_room(
            &alice,
            json!({"visibility": "public", "preset": "public_chat", "name": "A Space",
                   "creation_content": {"type": "m.space"}}),
        )
        .await;
    for name in ["Chess", "Knitting"] {
        srv.create_room(
            &alice,
            json!({"visibility": "public", "preset": "public_chat", "name": name,
                   "topic": format!("All about {name}")}),
        )
        .await;
    }
    srv.create_room(&alice, json!({"name": "Secret"})).await;

    // GET needs no token; the largest rooms come first.
    let (s, all) = srv
        .request("GET", "/_matrix/client/v3/publicRooms", None, None)
        .await;
    assert_eq!(s, 200, "{all}");
    assert_eq!(all["total_room_count_estimate"], json!(5));
    let ids = room_ids(&all);
    assert_eq!(ids.len(), 5);
    assert_eq!(&ids[..2], &[big.clone(), medium.clone()]);
    assert!(all.get("next_batch").is_none() && all.get("prev_batch").is_none());
    let hall = &all["chunk"][0];
    assert_eq!(hall["name"], json!("Big Hall"));
    assert_eq!(hall["topic"], json!("Everything"));
    assert_eq!(hall["canonical_alias"], json!("#hall:localhost"));
    assert_eq!(hall["num_joined_members"], json!(3));
    assert_eq!(hall["join_rule"], json!("public"));
    assert_eq!(hall["world_readable"], json!(false));
    assert_eq!(hall["guest_can_join"], json!(false));
    let sp = all["chunk"]
        .as_array()
        .and_then(|c| c.iter().find(|r| r["room_id"] == json!(space)))
        .expect("space listed");
    assert_eq!(sp["room_type"], json!("m.space"));

    // Pages of two, forwards and back, cover the same list.
    let mut seen = Vec::new();
    let mut since: Option<String> = None;
    let mut pages = Vec::new();
    loop {
        let mut path = "/_matrix/client/v3/publicRooms?limit=2".to_owned();
        if let Some(t) = &since {
            path.push_str(&format!("&since={t}"));
        }
        let (s, page) = srv.get(&path, &bob).await;
        assert_eq!(s, 200, "{page}");
        assert!(room_ids(&page).len() <= 2);
        seen.extend(room_ids(&page));
        pages.push(page.clone());
        match page["next_batch"].as_str() {
            Some(t) => since = Some(t.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, ids);
    assert_eq!(pages.len(), 3);
    assert!(pages[0].get("prev_batch").is_none());
    let prev = pages[2]["prev_batch"].as_str().expect("prev_batch");
    let (_, back) = srv
        .get(
            &format!("/_matrix/client/v3/publicRooms?limit=2&since={prev}"),
            &bob,
        )
        .await;
    assert_eq!(room_ids(&back), room_ids(&pages[1]));

    // POST with a body, likewise paginated.
    let (s, p1) = srv
        .post("/_matrix/client/v3/publicRooms", &bob, json!({"limit": 3}))
        .await;
    assert_eq!(s, 200, "{p1}");
    assert_eq!(room_ids(&p1), ids[..3].to_vec());
    let (_, p2) = srv
        .post(
            "/_matrix/client/v3/publicRooms",
            &bob,
            json!({"limit": 3, "since": p1["next_batch"]}),
        )
        .await;
    assert_eq!(room_ids(&p2), ids[3..].to_vec());
    assert!(p2.get("next_batch").is_none());
}

#[tokio::test]
async fn public_rooms_filters() {
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    let chess = srv
        .create_room(
            &alice,
            json!({"visibility": "public", "name": "Chess Club", "topic": "Openings and endgames"}),
        )
        .await;
    let garden = srv
        .create_room(
            &alice,
            json!({"visibility": "public", "name": "Garden", "room_alias_name": "roses"}),
        )
        .await;
    let space = srv
        .create_room(
            &alice,
            json!({"visibility": "public", "name": "Hobbies", "creation_content": {"type": "m.space"}}),
        )
        .await;
    let search = |term: &str| json!({"filter": {"generic_search_term": term}});
    let url = "/_matrix/client/v3/publicRooms";

    let (_, b) = srv.post(url, &alice, search("chess")).await;
    assert_eq!(room_ids(&b), vec![chess.clone()]);
    let (_, b) = srv.post(url, &alice, search("ENDGAME")).await;
    assert_eq!(room_ids(&b), vec![chess.clone()]);
    let (_, b) = srv.post(url, &alice, search("roses")).await;
    assert_eq!(room_ids(&b), vec![garden.clone()]);
    let (_, b) = srv.post(url, &alice, search("nothing like this")).await;
    assert_eq!(room_ids(&b), Vec::<String>::new());
    assert_eq!(b["total_room_count_estimate"], json!(0));

    let (_, b) = srv
        .post(url, &alice, json!({"filter": {"room_types": ["m.space"]}}))
        .await;
    assert_eq!(room_ids(&b), vec![space.clone()]);
    let (_, b) = srv
        .post(url, &alice, json!({"filter": {"room_types": [null]}}))
        .await;
    let mut got = room_ids(&b);
    got.sort();
    let mut want = vec![chess.clone(), garden.clone()];
    want.sort();
    assert_eq!(got, want);
    let (_, b) = srv
        .post(
            url,
            &alice,
            json!({"filter": {"room_types": [null, "m.space"]}, "include_all_networks": true}),
        )
        .await;
    assert_eq!(room_ids(&b).len(), 3);
    // No third-party networks are bridged here.
    let (_, b) = srv
        .post(url, &alice, json!({"third_party_instance_id": "irc"}))
        .await;
    assert_eq!(room_ids(&b), Vec::<String>::new());

    // Only this server's directory; POST needs a token; bad tokens and limits are rejected.
    let (s, _) = srv
        .post(&format!("{url}?server=localhost"), &alice, json!({}))
        .await;
    assert_eq!(s, 200);
    let (s, b) = srv
        .post(
            &format!("{url}?server=elsewhere.example"),
            &alice,
            json!({}),
        )
        .await;
    assert_eq!(
        (s, b["errcode"].as_str()),
        (400, Some("M_INVALID_PARAM")),
        "{b}"
    );
    let (s, b) = srv.request("POST", url, None, Some(json!({}))).await;
    assert_eq!(
        (s, b["errcode"].as_str()),
        (401, Some("M_MISSING_TOKEN")),
        "{b}"
    );
    let (s, b) = srv.get(&format!("{url}?since=bogus"), &alice).await;
    assert_eq!(
        (s, b["errcode"].as_str()),
        (400, Some("M_INVALID_PARAM")),
        "{b}"
    );
    let (s, b) = srv.get(&format!("{url}?limit=many"), &alice).await;
    assert_eq!(
        (s, b["errcode"].as_str()),
        (400, Some("M_INVALID_PARAM")),
        "{b}"
    );
    let (s, b) = srv.post(url, &alice, json!({"limit": -1})).await;
    assert_eq!((s, b["errcode"].as_str()), (400, Some("M_BAD_JSON")), "{b}");
    let (s, b) = srv
        .post(url, &alice, json!({"filter": {"room_types": "m.space"}}))
        .await;
    assert_eq!((s, b["errcode"].as_str()), (400, Some("M_BAD_JSON")), "{b}");

    // Unpublishing takes a room off the list.
    let (s, _) = srv
        .put(
            &visibility_path(&chess),
            &alice,
            json!({"visibility": "private"}),
        )
        .await;
    assert_eq!(s, 200);
    let (_, b) = srv.get(url, &alice).await;
    assert_eq!(b["total_room_count_estimate"], json!(2));
    assert!(!room_ids(&b).contains(&chess));
}
