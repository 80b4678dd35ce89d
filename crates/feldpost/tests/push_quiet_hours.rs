//! Quiet hours with an injected clock: weekend, a weekday window across midnight, a DST change,
//! holidays (built-in and organisation), leave, urgent overrides, the MSC4141 `time_and_day`
//! push condition, and the service account that sets the schedule by chat.

mod common;
mod push_common;

use std::sync::Arc;
use std::time::Duration;

use common::{TestServer, User, enc};
use feldpost_service::push::ManualClock;
use push_common::{FakeGateway, counts, eventually, set_pusher, shared_room};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(5);

/// Milliseconds of a wall-clock time in a zone.
fn at(tz: &str, s: &str) -> i64 {
    let dt: jiff::civil::DateTime = s.parse().expect("datetime");
    dt.to_zoned(jiff::tz::TimeZone::get(tz).expect("tz"))
        .expect("zoned")
        .timestamp()
        .as_millisecond()
}

/// A plain Wednesday noon in Berlin: quiet for none of the schedules below.
fn sentinel() -> i64 {
    at("Europe/Berlin", "2026-11-25T12:00")
}

struct Fixture {
    s: TestServer,
    gw: FakeGateway,
    clock: Arc<ManualClock>,
    a: User,
    b: User,
    room: String,
}

async fn fixture(tweak: impl FnOnce(&mut feldpost_service::config::Config)) -> Fixture {
    let gw = FakeGateway::start().await;
    let s = TestServer::start_with(|c| {
        c.outbound.allow_ranges = vec!["127.0.0.0/8".parse().expect("range")];
        c.push.allow_http_gateways = true;
        tweak(c);
    })
    .await;
    let clock = Arc::new(ManualClock::new(sentinel()));
    s.services.push.set_clock(clock.clone());
    let a = s.register("alice").await;
    let b = s.register("bob").await;
    let room = shared_room(&s, &a, &b).await;
    set_pusher(&s, &b, &gw.url, "org.example.app", "bobkey").await;
    Fixture {
        s,
        gw,
        clock,
        a,
        b,
        room,
    }
}

impl Fixture {
    async fn schedule(&self, content: Value) {
        let (st, b) = self
            .s
            .put(
                &format!(
                    "/_matrix/client/v3/user/{}/account_data/org.feldpost.quiet_hours",
                    enc(&self.b.user_id)
                ),
                &self.b,
                content,
            )
            .await;
        assert_eq!(st, 200, "{b}");
    }

    async fn notified(&self, event_id: &str) -> bool {
        let (_, n) = self
            .s
            .get("/_matrix/client/v3/notifications?limit=100", &self.b)
            .await;
        n["notifications"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x["event"]["event_id"] == event_id))
    }

    async fn send(&self, content: Value) -> String {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        let (st, b) = self
            .s
            .put(
                &format!(
                    "/_matrix/client/v3/rooms/{}/send/m.room.message/q{}",
                    enc(&self.room),
                    N.fetch_add(1, Ordering::SeqCst)
                ),
                &self.a,
                content,
            )
            .await;
        assert_eq!(st, 200, "{b}");
        b["event_id"].as_str().expect("event_id").to_owned()
    }

    /// Waits until push has seen the event through (evaluation runs before the event is stored;
    /// the bot looks at it afterwards, in the background).
    async fn evaluated(&self, event_id: &str) {
        let stream = self
            .s
            .services
            .store
            .get_event(event_id)
            .await
            .expect("store")
            .expect("event")
            .stream;
        let done = eventually(WAIT, || async {
            (self.s.services.push.evaluated_up_to() >= stream).then_some(())
        })
        .await;
        assert!(done.is_some(), "{event_id} was never evaluated");
    }

    /// Sends `content` at `ms` and tells whether it was pushed. Counts rise either way.
    async fn pushed_at(&self, ms: i64, content: Value) -> bool {
        self.clock.set(ms);
        let e = self.send(content).await;
        let evaluated = eventually(WAIT, || async { self.notified(&e).await.then_some(()) }).await;
        assert!(evaluated.is_some(), "no notification was recorded for {e}");
        // A message at an unquiet time follows; the queue keeps order, so once it arrived the
        // first one either arrived before it or was never pushed.
        self.clock.set(sentinel());
        let marker = self
            .send(json!({"msgtype": "m.text", "body": "marker"}))
            .await;
        let arrived = eventually(WAIT, || async {
            let got = self.gw.received().await;
            got.iter()
                .any(|v| v["notification"]["event_id"] == marker)
                .then_some(got)
        })
        .await
        .expect("the marker was never pushed");
        arrived.iter().any(|v| v["notification"]["event_id"] == e)
    }

    async fn text_pushed_at(&self, ms: i64) -> bool {
        self.pushed_at(ms, json!({"msgtype": "m.text", "body": "Meldung"}))
            .await
    }
}

#[tokio::test]
async fn weekend_is_quiet_but_counts_still_rise() {
    let f = fixture(|_| {}).await;
    f.schedule(json!({"timezone": "Europe/Berlin", "windows": [{"day_of_week": [0, 6]}]}))
        .await;
    let before = counts(&f.s, &f.b, &f.room).await.0;
    assert!(
        !f.text_pushed_at(at("Europe/Berlin", "2026-11-28T12:00"))
            .await
    );
    assert!(
        !f.text_pushed_at(at("Europe/Berlin", "2026-11-29T23:59"))
            .await
    );
    assert!(
        f.text_pushed_at(at("Europe/Berlin", "2026-11-30T00:00"))
            .await
    );
    // Every message counted, pushed or not (3 plus 3 markers).
    assert_eq!(counts(&f.s, &f.b, &f.room).await.0, before + 6);
    // Switched off: the weekend rings again.
    f.schedule(json!({"enabled": false, "timezone": "Europe/Berlin",
                      "windows": [{"day_of_week": [0, 6]}]}))
        .await;
    assert!(
        f.text_pushed_at(at("Europe/Berlin", "2026-11-28T12:00"))
            .await
    );
}

#[tokio::test]
async fn weekday_window_across_midnight() {
    let f = fixture(|_| {}).await;
    f.schedule(json!({"timezone": "Europe/Berlin", "windows": [
        {"day_of_week": [1, 2, 3, 4, 5], "time_of_day": ["22:00", "06:00"]}]}))
        .await;
    // Tuesday evening and Wednesday early morning are quiet; the edges are inclusive.
    assert!(
        f.text_pushed_at(at("Europe/Berlin", "2026-11-24T21:59"))
            .await
    );
    assert!(
        !f.text_pushed_at(at("Europe/Berlin", "2026-11-24T22:00"))
            .await
    );
    assert!(
        !f.text_pushed_at(at("Europe/Berlin", "2026-11-25T06:00"))
            .await
    );
    assert!(
        f.text_pushed_at(at("Europe/Berlin", "2026-11-25T06:01"))
            .await
    );
    // Friday night runs into Saturday morning; Sunday night into Monday does not.
    assert!(
        !f.text_pushed_at(at("Europe/Berlin", "2026-11-28T03:00"))
            .await
    );
    assert!(
        f.text_pushed_at(at("Europe/Berlin", "2026-11-30T03:00"))
            .await
    );
}

#[tokio::test]
async fn dst_change_keeps_local_times() {
    let f = fixture(|_| {}).await;
    f.schedule(json!({"timezone": "Europe/Berlin", "windows": [
        {"day_of_week": [0, 1, 2, 3, 4, 5, 6], "time_of_day": ["22:00", "06:00"]}]}))
        .await;
    // Sunday 2026-03-29, clocks jump from 02:00 to 03:00 (UTC+1 to UTC+2).
    assert!(
        !f.text_pushed_at(at("Europe/Berlin", "2026-03-29T05:30"))
            .await
    );
    // 04:30 UTC is 06:30 summer time: not quiet, although it would be 05:30 in winter time.
    assert!(f.text_pushed_at(at("UTC", "2026-03-29T04:30")).await);
    // And back in October (UTC+2 to UTC+1): 05:30 UTC is 06:30 CET.
    assert!(f.text_pushed_at(at("UTC", "2026-10-26T05:30")).await);
    assert!(!f.text_pushed_at(at("UTC", "2026-10-26T04:30")).await);
}

#[tokio::test]
async fn holidays_and_leave() {
    let f = fixture(|c| {
        c.push.quiet_hours.holidays = vec![feldpost_service::push::config::OrgHoliday {
            date: "12-24".into(),
            name: "Heiligabend".into(),
            regions: vec![],
        }];
    })
    .await;
    f.schedule(
        json!({"timezone": "Europe/Berlin", "holiday_region": "DE-BY",
                      "leave": [{"from": "2027-02-15", "to": "2027-02-19"}]}),
    )
    .await;
    // Heilige Drei Könige in Bavaria; Fronleichnam 2026 (Easter + 60) is 4 June.
    assert!(
        !f.text_pushed_at(at("Europe/Berlin", "2026-01-06T10:00"))
            .await
    );
    assert!(
        !f.text_pushed_at(at("Europe/Berlin", "2026-06-04T10:00"))
            .await
    );
    assert!(
        f.text_pushed_at(at("Europe/Berlin", "2026-06-05T10:00"))
            .await
    );
    // The organisation's own day.
    assert!(
        !f.text_pushed_at(at("Europe/Berlin", "2026-12-24T10:00"))
            .await
    );
    // Leave, both ends inclusive.
    assert!(
        !f.text_pushed_at(at("Europe/Berlin", "2027-02-15T08:00"))
            .await
    );
    assert!(
        !f.text_pushed_at(at("Europe/Berlin", "2027-02-19T23:00"))
            .await
    );
    assert!(
        f.text_pushed_at(at("Europe/Berlin", "2027-02-20T08:00"))
            .await
    );
    // Another Land: Epiphany is a working day in Berlin.
    f.schedule(json!({"timezone": "Europe/Berlin", "holiday_region": "DE-BE"}))
        .await;
    assert!(
        f.text_pushed_at(at("Europe/Berlin", "2026-01-06T10:00"))
            .await
    );
}

#[tokio::test]
async fn urgent_alerts_get_through() {
    let f = fixture(|c| c.push.quiet_hours.urgent_power_level = 50).await;
    f.schedule(json!({"timezone": "Europe/Berlin", "windows": [{"day_of_week": [0, 6]}]}))
        .await;
    let saturday = at("Europe/Berlin", "2026-11-28T12:00");
    // A room mention by the room's creator (power 100) is urgent.
    assert!(
        f.pushed_at(
            saturday,
            json!({"msgtype": "m.text", "body": "Alarm!", "m.mentions": {"room": true}})
        )
        .await
    );
    assert!(!f.text_pushed_at(saturday).await);
    // A room mention by a member without the power level is not.
    let c = f.s.register("carol").await;
    let (st, _) =
        f.s.post(
            &format!("/_matrix/client/v3/rooms/{}/invite", enc(&f.room)),
            &f.a,
            json!({"user_id": c.user_id}),
        )
        .await;
    assert_eq!(st, 200);
    f.s.join(&c, &f.room).await;
    f.clock.set(saturday);
    let (st, body) =
        f.s.put(
            &format!(
                "/_matrix/client/v3/rooms/{}/send/m.room.message/carol1",
                enc(&f.room)
            ),
            &c,
            json!({"msgtype": "m.text", "body": "@room Kuchen!", "m.mentions": {"room": true}}),
        )
        .await;
    assert_eq!(st, 200, "{body}");
    let e = body["event_id"].as_str().expect("id").to_owned();
    let evaluated = eventually(WAIT, || async { f.notified(&e).await.then_some(()) }).await;
    assert!(evaluated.is_some());
    f.clock.set(sentinel());
    let marker = f.send(json!({"msgtype": "m.text", "body": "marker"})).await;
    let got = eventually(WAIT, || async {
        let got = f.gw.received().await;
        got.iter()
            .any(|v| v["notification"]["event_id"] == marker)
            .then_some(got)
    })
    .await
    .expect("marker");
    assert!(!got.iter().any(|v| v["notification"]["event_id"] == e));
}

#[tokio::test]
async fn operator_listed_senders_are_urgent() {
    let f = fixture(|c| c.push.quiet_hours.urgent_senders = vec!["@alice:localhost".into()]).await;
    f.schedule(json!({"timezone": "Europe/Berlin", "windows": [{"day_of_week": [0, 6]}]}))
        .await;
    assert!(
        f.text_pushed_at(at("Europe/Berlin", "2026-11-28T12:00"))
            .await
    );
}

#[tokio::test]
async fn time_and_day_push_condition() {
    let f = fixture(|_| {}).await;
    // Focus time on Wednesday mornings: no notifications from this room at all.
    let (st, b) =
        f.s.put(
            "/_matrix/client/v3/pushrules/global/override/focus",
            &f.b,
            json!({"actions": [], "conditions": [{
                "kind": "org.matrix.msc4141.time_and_day",
                "timezone": "Europe/Berlin",
                "intervals": [{"time_of_day": ["09:00", "11:00"], "day_of_week": [3]}]
            }]}),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    let (_, rule) =
        f.s.get("/_matrix/client/v3/pushrules/global/override/focus", &f.b)
            .await;
    assert_eq!(
        rule["conditions"][0]["kind"],
        "org.matrix.msc4141.time_and_day"
    );

    f.clock.set(at("Europe/Berlin", "2026-11-25T10:00"));
    let muted = f.send(json!({"msgtype": "m.text", "body": "leise"})).await;
    // Evaluation must see the 10:00 clock before the clock moves on (it happens on the send
    // path; the wait keeps the test independent of that).
    f.evaluated(&muted).await;
    f.clock.set(at("Europe/Berlin", "2026-11-25T11:30"));
    let loud = f.send(json!({"msgtype": "m.text", "body": "laut"})).await;
    let ok = eventually(WAIT, || async { f.notified(&loud).await.then_some(()) }).await;
    assert!(ok.is_some());
    assert!(!f.notified(&muted).await);
}

#[tokio::test]
async fn the_service_account_sets_the_schedule_by_chat() {
    let f = fixture(|_| {}).await;
    let bot = "@ruhezeit:localhost";
    let dm =
        f.s.create_room(
            &f.b,
            json!({"preset": "trusted_private_chat", "is_direct": true, "invite": [bot]}),
        )
        .await;
    let say = |text: &'static str| {
        let (s, b, dm) = (&f.s, &f.b, dm.clone());
        async move {
            use std::sync::atomic::{AtomicU64, Ordering};
            static N: AtomicU64 = AtomicU64::new(0);
            let (st, body) = s
                .put(
                    &format!(
                        "/_matrix/client/v3/rooms/{}/send/m.room.message/c{}",
                        enc(&dm),
                        N.fetch_add(1, Ordering::SeqCst)
                    ),
                    b,
                    json!({"msgtype": "m.text", "body": text}),
                )
                .await;
            assert_eq!(st, 200, "{body}");
        }
    };
    let notices = || async {
        let (_, m) =
            f.s.get(
                &format!(
                    "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=50",
                    enc(&dm)
                ),
                &f.b,
            )
            .await;
        m["chunk"]
            .as_array()
            .map(|c| {
                c.iter()
                    .filter(|e| e["sender"] == bot && e["content"]["msgtype"] == "m.notice")
                    .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    };
    // The bot joins and introduces itself.
    let joined = eventually(WAIT, || async {
        (!notices().await.is_empty()).then_some(())
    })
    .await;
    assert!(
        joined.is_some(),
        "the service account did not answer the invite"
    );

    say("ruhezeit wochenende an").await;
    let reply = eventually(WAIT, || async {
        notices()
            .await
            .into_iter()
            .find(|n| n.contains("Wochenende"))
    })
    .await;
    assert!(reply.is_some());
    say("urlaub 2026-12-21 bis 2027-01-04").await;
    say("zeitzone Europe/Berlin").await;
    say("status").await;
    let status = eventually(WAIT, || async {
        notices()
            .await
            .into_iter()
            .find(|n| n.contains("Ruhezeiten: an"))
    })
    .await
    .expect("status answer");
    assert!(status.contains("2026-12-21"), "{status}");
    assert!(status.contains("Europe/Berlin"), "{status}");
    let (_, schedule) =
        f.s.get(
            &format!(
                "/_matrix/client/v3/user/{}/account_data/org.feldpost.quiet_hours",
                enc(&f.b.user_id)
            ),
            &f.b,
        )
        .await;
    assert_eq!(schedule["windows"], json!([{"day_of_week": [0, 6]}]));
    assert_eq!(schedule["leave"][0]["from"], "2026-12-21");
    // English works too, and the schedule takes effect.
    say("quiet weekend off").await;
    let reply = eventually(WAIT, || async {
        notices()
            .await
            .into_iter()
            .find(|n| n.contains("no longer quiet"))
    })
    .await;
    assert!(reply.is_some());
    assert!(
        !f.text_pushed_at(at("Europe/Berlin", "2026-12-23T12:00"))
            .await
    );
}
