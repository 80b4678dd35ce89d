//! Synapse-compatible room and media administration (list, details, members, state, block,
//! delete with purge; media listing and quarantine) and server notices.

mod common;

use common::*;
use serde_json::{Value, json};

async fn setup() -> (TestServer, User, User) {
    let srv = TestServer::start().await;
    let root = srv.register("root").await;
    make_admin(&srv, &root).await;
    let anna = srv.register("anna").await;
    (srv, root, anna)
}

fn room_path(room: &str, rest: &str) -> String {
    format!("/_synapse/admin/v1/rooms/{}{rest}", enc(room))
}

#[tokio::test]
async fn room_list_details_members_and_state() {
    let (srv, root, anna) = setup().await;
    let bert = srv.register("bert").await;
    let lage = srv
        .create_room(
            &anna,
            json!({"name": "Lagebesprechung", "room_alias_name": "lage", "preset": "public_chat"}),
        )
        .await;
    srv.join(&bert, &lage).await;
    let kantine = srv.create_room(&bert, json!({"name": "Kantine"})).await;
    let unnamed = srv.create_room(&anna, json!({})).await;

    let (s, b) = srv.get("/_synapse/admin/v1/rooms", &root).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["total_rooms"], 3);
    assert_eq!(b["offset"], 0);
    let rooms = b["rooms"].as_array().unwrap();
    let lage_entry = rooms
        .iter()
        .find(|r| r["room_id"] == lage.as_str())
        .expect("listed");
    assert_eq!(lage_entry["name"], "Lagebesprechung");
    assert_eq!(lage_entry["canonical_alias"], "#lage:localhost");
    assert_eq!(lage_entry["joined_members"], 2);
    assert_eq!(lage_entry["joined_local_members"], 2);
    assert_eq!(lage_entry["join_rules"], "public");
    assert_eq!(lage_entry["creator"], "@anna:localhost");
    assert_eq!(lage_entry["version"], "11");
    assert_eq!(lage_entry["federatable"], true);
    assert_eq!(lage_entry["history_visibility"], "shared");
    assert!(lage_entry["state_events"].as_i64().unwrap() >= 7);

    // Search, order and pagination.
    let (_, b) = srv
        .get("/_synapse/admin/v1/rooms?search_term=kant", &root)
        .await;
    assert_eq!(b["total_rooms"], 1);
    assert_eq!(b["rooms"][0]["room_id"], kantine.as_str());
    let (_, b) = srv
        .get("/_synapse/admin/v1/rooms?search_term=%23lage", &root)
        .await;
    assert_eq!(b["rooms"][0]["room_id"], lage.as_str());
    let (_, b) = srv
        .get(
            "/_synapse/admin/v1/rooms?order_by=joined_members&dir=b&limit=1",
            &root,
        )
        .await;
    assert_eq!(b["rooms"][0]["room_id"], lage.as_str());
    assert_eq!(b["next_batch"], 1);
    let (_, b) = srv
        .get("/_synapse/admin/v1/rooms?from=2&limit=1", &root)
        .await;
    assert_eq!(b["rooms"].as_array().unwrap().len(), 1);
    assert_eq!(b["prev_batch"], 1);
    assert!(b.get("next_batch").is_none());
    let (s, b) = srv
        .get("/_synapse/admin/v1/rooms?order_by=colour", &root)
        .await;
    assert_eq!((s, b["errcode"].as_str()), (400, Some("M_INVALID_PARAM")));

    // Details, members, state.
    let (s, d) = srv.get(&room_path(&lage, ""), &root).await;
    assert_eq!(s, 200, "{d}");
    assert_eq!(d["joined_local_devices"], 2);
    assert_eq!(d["public"], false);
    let (_, m) = srv.get(&room_path(&lage, "/members"), &root).await;
    let mut members: Vec<String> = serde_json::from_value(m["members"].clone()).unwrap();
    members.sort();
    assert_eq!(members, ["@anna:localhost", "@bert:localhost"]);
    assert_eq!(m["total"], 2);
    let (_, st) = srv.get(&room_path(&unnamed, "/state"), &root).await;
    let types: Vec<&str> = st["state"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert!(
        types.contains(&"m.room.create") && types.contains(&"m.room.power_levels"),
        "{types:?}"
    );
    assert!(st["state"][0]["event_id"].is_string());

    let (s, b) = srv.get(&room_path("!nope:localhost", ""), &root).await;
    assert_eq!((s, b["errcode"].as_str()), (404, Some("M_NOT_FOUND")));
    let (s, _) = srv
        .get(&room_path("!nope:localhost", "/members"), &root)
        .await;
    assert_eq!(s, 404);
    let (s, b) = srv
        .get("/_synapse/admin/v1/rooms/not-a-room/state", &root)
        .await;
    assert_eq!((s, b["errcode"].as_str()), (400, Some("M_INVALID_PARAM")));
}

#[tokio::test]
async fn block_and_delete_with_purge() {
    let (srv, root, anna) = setup().await;
    let bert = srv.register("bert").await;
    let room = srv
        .create_room(&anna, json!({"name": "Weg damit", "room_alias_name": "weg", "visibility": "public", "preset": "public_chat"}))
        .await;
    srv.join(&bert, &room).await;
    srv.send_text(&anna, &room, "hallo").await;
    let carla = srv.register("carla").await;
    let (s, _) = srv
        .post(
            &format!("/_matrix/client/v3/rooms/{}/invite", enc(&room)),
            &anna,
            json!({"user_id": carla.user_id}),
        )
        .await;
    assert_eq!(s, 200);

    // Block: nobody may join.
    let (s, b) = srv
        .put(&room_path(&room, "/block"), &root, json!({"block": true}))
        .await;
    assert_eq!((s, b), (200, json!({"block": true})));
    let (_, b) = srv.get(&room_path(&room, "/block"), &root).await;
    assert_eq!(b, json!({"block": true, "user_id": "@root:localhost"}));
    let dora = srv.register("dora").await;
    let (s, b) = srv
        .post(
            &format!("/_matrix/client/v3/join/{}", enc(&room)),
            &dora,
            json!({}),
        )
        .await;
    assert_eq!(
        (s, b["errcode"].as_str()),
        (403, Some("M_FORBIDDEN")),
        "{b}"
    );
    let (s, _) = srv
        .put(&room_path(&room, "/block"), &root, json!({"block": false}))
        .await;
    assert_eq!(s, 200);
    let (_, b) = srv.get(&room_path(&room, "/block"), &root).await;
    assert_eq!(b, json!({"block": false}));
    let (s, _) = srv.put(&room_path(&room, "/block"), &root, json!({})).await;
    assert_eq!(s, 400);

    // A replacement room is not offered.
    let (s, b) = srv
        .request(
            "DELETE",
            &room_path(&room, ""),
            Some(&root.token),
            Some(json!({"new_room_user_id": "@root:localhost"})),
        )
        .await;
    assert_eq!(
        (s, b["errcode"].as_str()),
        (404, Some("M_UNRECOGNIZED")),
        "{b}"
    );

    let since = srv.sync(&anna, None, 0).await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    let (s, b) = srv
        .request(
            "DELETE",
            &room_path(&room, ""),
            Some(&root.token),
            Some(json!({"block": true, "purge": true})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let mut kicked: Vec<String> = serde_json::from_value(b["kicked_users"].clone()).unwrap();
    kicked.sort();
    assert_eq!(kicked, ["@anna:localhost", "@bert:localhost"]);
    assert_eq!(b["failed_to_kick_users"], json!([]));
    assert_eq!(b["local_aliases"], json!(["#weg:localhost"]));
    assert_eq!(b["new_room_id"], Value::Null);

    // The room, its events, its alias and its directory entry are gone.
    let sync = srv.sync(&anna, Some(&since), 0).await;
    assert!(sync["rooms"]["join"].get(&room).is_none(), "{sync}");
    let (s, _) = srv.get(&room_path(&room, ""), &root).await;
    assert_eq!(s, 404);
    let (s, _) = srv
        .request(
            "GET",
            "/_matrix/client/v3/directory/room/%23weg:localhost",
            None,
            None,
        )
        .await;
    assert_eq!(s, 404);
    let (_, b) = srv.get("/_synapse/admin/v1/rooms", &root).await;
    assert_eq!(b["total_rooms"], 0);
    let (_, jr) = srv.get("/_matrix/client/v3/joined_rooms", &bert).await;
    assert_eq!(jr["joined_rooms"], json!([]));
    let (s, _) = srv
        .get(
            &format!("/_matrix/client/v3/rooms/{}/messages?dir=b", enc(&room)),
            &anna,
        )
        .await;
    assert!(s == 403 || s == 404, "{s}");
    // Still blocked after the purge; everyone's sync keeps working.
    let (_, b) = srv.get(&room_path(&room, "/block"), &root).await;
    assert_eq!(b["block"], true);
    srv.sync(&carla, None, 0).await;
    srv.sync(&bert, None, 0).await;
    let (s, _) = srv
        .request(
            "DELETE",
            &room_path(&room, ""),
            Some(&root.token),
            Some(json!({})),
        )
        .await;
    assert_eq!(s, 404, "already gone");
}

#[tokio::test]
async fn delete_v2_reports_its_status() {
    let (srv, root, anna) = setup().await;
    let room = srv.create_room(&anna, json!({})).await;
    let since = srv.sync(&anna, None, 0).await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    let (s, b) = srv
        .request(
            "DELETE",
            &format!("/_synapse/admin/v2/rooms/{}", enc(&room)),
            Some(&root.token),
            Some(json!({"purge": false})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let id = b["delete_id"].as_str().unwrap().to_owned();
    let (s, b) = srv
        .get(
            &format!("/_synapse/admin/v2/rooms/delete_status/{id}"),
            &root,
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["status"], "complete");
    assert_eq!(
        b["shutdown_room"]["kicked_users"],
        json!(["@anna:localhost"])
    );
    let (_, b) = srv
        .get(
            &format!("/_synapse/admin/v2/rooms/{}/delete_status", enc(&room)),
            &root,
        )
        .await;
    assert_eq!(b["results"][0]["delete_id"], id.as_str());
    // Not purged: the members see themselves leave, and the room is still known, empty.
    let sync = srv.sync(&anna, Some(&since), 0).await;
    assert!(sync["rooms"]["leave"].get(&room).is_some(), "{sync}");
    let (s, d) = srv.get(&room_path(&room, ""), &root).await;
    assert_eq!((s, d["joined_members"].as_i64()), (200, Some(0)));
    let (s, _) = srv
        .get("/_synapse/admin/v2/rooms/delete_status/nope", &root)
        .await;
    assert_eq!(s, 404);
    let (s, _) = srv
        .get(
            &format!(
                "/_synapse/admin/v2/rooms/{}/delete_status",
                enc("!other:localhost")
            ),
            &root,
        )
        .await;
    assert_eq!(s, 404);
}

async fn upload(srv: &TestServer, u: &User, data: &'static [u8]) -> String {
    let r = srv
        .http
        .post(srv.url("/_matrix/media/v3/upload?filename=lage.txt"))
        .bearer_auth(&u.token)
        .header("Content-Type", "text/plain")
        .body(data)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let b: Value = r.json().await.unwrap();
    b["content_uri"].as_str().unwrap().to_owned()
}

async fn download_status(srv: &TestServer, u: &User, mxc: &str) -> u16 {
    let rest = mxc.strip_prefix("mxc://").unwrap();
    srv.http
        .get(srv.url(&format!("/_matrix/client/v1/media/download/{rest}")))
        .bearer_auth(&u.token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn media_listing_and_quarantine() {
    let (srv, root, anna) = setup().await;
    let first = upload(&srv, &anna, b"eins").await;
    let second = upload(&srv, &anna, b"zwei").await;
    let room = srv.create_room(&anna, json!({})).await;
    let (s, _) = srv
        .put(
            &format!(
                "/_matrix/client/v3/rooms/{}/send/m.room.message/img1",
                enc(&room)
            ),
            &anna,
            json!({"msgtype": "m.file", "body": "lage.txt", "url": first}),
        )
        .await;
    assert_eq!(s, 200);

    let (s, b) = srv
        .get("/_synapse/admin/v1/users/@anna:localhost/media", &root)
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["total"], 2);
    let item = &b["media"][0];
    assert_eq!(item["media_type"], "text/plain");
    assert_eq!(item["upload_name"], "lage.txt");
    assert_eq!(item["media_length"], 4);
    assert_eq!(item["quarantined_by"], Value::Null);
    let (_, page) = srv
        .get(
            "/_synapse/admin/v1/users/@anna:localhost/media?limit=1&order_by=media_length&dir=b",
            &root,
        )
        .await;
    assert_eq!(page["media"].as_array().unwrap().len(), 1);
    assert_eq!(page["next_token"], 1);
    let (s, _) = srv
        .get(
            "/_synapse/admin/v1/users/@anna:localhost/media?order_by=smell",
            &root,
        )
        .await;
    assert_eq!(s, 400);

    let (_, rm) = srv
        .get(
            &format!("/_synapse/admin/v1/room/{}/media", enc(&room)),
            &root,
        )
        .await;
    assert_eq!(rm, json!({"local": [first], "remote": []}));

    // One item: downloads stop, and start again when released.
    let id = first.rsplit('/').next().unwrap();
    assert_eq!(download_status(&srv, &anna, &first).await, 200);
    let (s, _) = srv
        .post(
            &format!("/_synapse/admin/v1/media/quarantine/localhost/{id}"),
            &root,
            json!({}),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(download_status(&srv, &anna, &first).await, 404);
    let (_, b) = srv
        .get("/_synapse/admin/v1/users/@anna:localhost/media", &root)
        .await;
    let q: Vec<&Value> = b["media"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["quarantined_by"] == "@root:localhost")
        .collect();
    assert_eq!(q.len(), 1);
    let (s, _) = srv
        .post(
            &format!("/_synapse/admin/v1/media/unquarantine/localhost/{id}"),
            &root,
            json!({}),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(download_status(&srv, &anna, &first).await, 200);
    let (s, _) = srv
        .post(
            "/_synapse/admin/v1/media/quarantine/elsewhere/abc",
            &root,
            json!({}),
        )
        .await;
    assert_eq!(s, 404);

    // A room's media, then a user's.
    let (_, b) = srv
        .post(
            &format!("/_synapse/admin/v1/room/{}/media/quarantine", enc(&room)),
            &root,
            json!({}),
        )
        .await;
    assert_eq!(b, json!({"num_quarantined": 1}));
    assert_eq!(download_status(&srv, &anna, &first).await, 404);
    assert_eq!(download_status(&srv, &anna, &second).await, 200);
    let (_, b) = srv
        .post(
            "/_synapse/admin/v1/user/@anna:localhost/media/quarantine",
            &root,
            json!({}),
        )
        .await;
    assert_eq!(b, json!({"num_quarantined": 1}));
    assert_eq!(download_status(&srv, &anna, &second).await, 404);
    let (s, _) = srv
        .post(
            "/_synapse/admin/v1/user/@nobody:localhost/media/quarantine",
            &root,
            json!({}),
        )
        .await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn server_notices_reach_a_user_who_cannot_answer_or_refuse() {
    let (srv, root, anna) = setup().await;
    let (s, b) = srv
        .post(
            "/_synapse/admin/v1/send_server_notice",
            &root,
            json!({"user_id": "@anna:localhost", "content": {"msgtype": "m.text", "body": "Wartung heute um 22 Uhr"}}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert!(b["event_id"].as_str().unwrap().starts_with('$'));

    // Invited, not joined, as the spec asks.
    let sync = srv.sync(&anna, None, 0).await;
    let invites = sync["rooms"]["invite"].as_object().expect("invited");
    assert_eq!(invites.len(), 1);
    let room = invites.keys().next().unwrap().clone();
    let (s, b) = srv
        .post(
            &format!("/_matrix/client/v3/rooms/{}/leave", enc(&room)),
            &anna,
            json!({}),
        )
        .await;
    assert_eq!(
        (s, b["errcode"].as_str()),
        (403, Some("M_CANNOT_LEAVE_SERVER_NOTICE_ROOM")),
        "{b}"
    );
    srv.join(&anna, &room).await;
    let sync = srv.sync(&anna, None, 0).await;
    assert!(
        timeline_bodies(&sync, &room).contains(&"Wartung heute um 22 Uhr".to_owned()),
        "{sync}"
    );
    let tags = &sync["rooms"]["join"][&room]["account_data"]["events"];
    assert!(
        tags.as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "m.tag" && e["content"]["tags"].get("m.server_notice").is_some()),
        "{tags}"
    );
    // The user cannot write into it.
    let (s, b) = srv
        .put(
            &format!(
                "/_matrix/client/v3/rooms/{}/send/m.room.message/t1",
                enc(&room)
            ),
            &anna,
            json!({"msgtype": "m.text", "body": "Antwort"}),
        )
        .await;
    assert_eq!(
        (s, b["errcode"].as_str()),
        (403, Some("M_FORBIDDEN")),
        "{b}"
    );

    // The next notice uses the same room; Feldpost's own endpoint sends m.server_notice.
    let (s, b) = srv
        .post(
            "/_feldpost/admin/v1/server_notices",
            &root,
            json!({"user_id": "@anna:localhost", "body": "Zweiter Hinweis"}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (_, ev) = srv
        .get(
            &format!(
                "/_matrix/client/v3/rooms/{}/event/{}",
                enc(&room),
                enc(b["event_id"].as_str().unwrap())
            ),
            &anna,
        )
        .await;
    assert_eq!(ev["content"]["msgtype"], "m.server_notice");
    assert_eq!(ev["sender"], "@feldpost-notices:localhost");
    let (_, jr) = srv.get("/_matrix/client/v3/joined_rooms", &anna).await;
    assert_eq!(jr["joined_rooms"], json!([room]));

    // Leaving after joining is allowed; the next notice invites again.
    let (s, _) = srv
        .post(
            &format!("/_matrix/client/v3/rooms/{}/leave", enc(&room)),
            &anna,
            json!({}),
        )
        .await;
    assert_eq!(s, 200);
    let (s, _) = srv
        .post(
            "/_feldpost/admin/v1/server_notices",
            &root,
            json!({"user_id": "@anna:localhost", "body": "Dritter"}),
        )
        .await;
    assert_eq!(s, 200);
    let sync = srv.sync(&anna, None, 0).await;
    assert!(sync["rooms"]["invite"].get(&room).is_some(), "{sync}");

    // Refused: unknown, remote, deactivated users, malformed content.
    for (body, status) in [
        (
            json!({"user_id": "@nobody:localhost", "content": {"msgtype": "m.text", "body": "x"}}),
            404,
        ),
        (
            json!({"user_id": "@x:elsewhere", "content": {"msgtype": "m.text", "body": "x"}}),
            400,
        ),
        (
            json!({"user_id": "@anna:localhost", "content": {"body": "x"}}),
            400,
        ),
        (json!({"user_id": "@anna:localhost", "content": "x"}), 400),
        (json!({"user_id": "@anna:localhost"}), 400),
        (json!({"content": {"msgtype": "m.text", "body": "x"}}), 400),
    ] {
        let (s, b) = srv
            .post("/_synapse/admin/v1/send_server_notice", &root, body.clone())
            .await;
        assert_eq!(s, status, "{body}: {b}");
    }
    let (s, _) = srv
        .post(
            "/_feldpost/admin/v1/server_notices",
            &root,
            json!({"user_id": "@anna:localhost", "body": "  "}),
        )
        .await;
    assert_eq!(s, 400);
    // Nobody can sign in as the notices account.
    let (s, _) = srv
        .request(
            "POST",
            "/_matrix/client/v3/login",
            None,
            Some(json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "feldpost-notices"}, "password": ""})),
        )
        .await;
    assert_eq!(s, 403);
}

#[tokio::test]
async fn server_notices_service_is_usable_by_other_features() {
    let (srv, _root, anna) = setup().await;
    let user: ruma::OwnedUserId = anna.user_id.as_str().try_into().unwrap();
    let id = srv
        .services
        .server_notices
        .send_text(&user, "Hinweis aus dem Dienst")
        .await
        .expect("notice sent");
    assert!(id.as_str().starts_with('$'));
    let sync = srv.sync(&anna, None, 0).await;
    assert_eq!(sync["rooms"]["invite"].as_object().unwrap().len(), 1);
}
