//! The simulator dates every answer of every platform's API with the platform's clock, as
//! real servers do: served pages and refusals alike (a wrong token, the rate limit), the
//! clock read when the request arrives, skewed when a test skews it.

mod support;

use chat_exporter::simulator::Rendering;
use support::*;

/// One route of each platform's API, and how a request to it carries the test token.
fn request(platform: &str, base: &str, token: Option<&str>) -> reqwest::RequestBuilder {
    let http = reqwest::Client::new();
    match platform {
        "movidesk" => {
            let query: Vec<(&str, &str)> = token.map(|t| ("token", t)).into_iter().collect();
            http.get(format!("{base}/public/v1/tickets")).query(&query)
        }
        "chatwoot" => {
            let r = http.get(format!("{base}/api/v1/accounts/7/conversations"));
            match token {
                Some(t) => r.header("api_access_token", t),
                None => r,
            }
        }
        "rocketchat" => {
            let r = http.get(format!("{base}/api/v1/livechat/rooms"));
            match token {
                Some(t) => r.header("x-user-id", "exporterUserId01").header("x-auth-token", t),
                None => r,
            }
        }
        other => panic!("no route of {other} in this test: add one"),
    }
}

async fn date_of(r: reqwest::RequestBuilder) -> (u16, Option<String>) {
    let response = r.send().await.expect("the simulator answers");
    let date = response.headers().get("date").map(|d| d.to_str().unwrap().to_string());
    (response.status().as_u16(), date)
}

#[tokio::test]
async fn every_answer_is_dated_by_the_platforms_clock_refusals_included() {
    for platform in PLATFORMS.iter() {
        let sim = start_simulator(manual_sim_of(platform, 3)).await;
        sim.state.advance(3600);
        let clock = sim.state.date_header().to_str().unwrap().to_string();
        let base = sim.url();

        assert_eq!(date_of(request(platform, &base, Some(TOKEN))).await, (200, Some(clock.clone())), "{platform}");
        let (status, date) = date_of(request(platform, &base, Some("wrong"))).await;
        assert_eq!((status, date.as_ref()), (401, Some(&clock)), "{platform}: a wrong token");
        let (status, date) = date_of(request(platform, &base, None)).await;
        assert_eq!((status, date.as_ref()), (401, Some(&clock)), "{platform}: no token");

        sim.state.set_rate_limit(Some(1), std::time::Duration::from_secs(60));
        let _ = date_of(request(platform, &base, Some(TOKEN))).await;
        let (status, date) = date_of(request(platform, &base, Some(TOKEN))).await;
        assert_eq!((status, date.as_ref()), (429, Some(&clock)), "{platform}: over the rate limit");

        // A proxy with its own clock: the skew shows in every answer.
        sim.state.set_rendering(Rendering { date_header_skew_seconds: 3600, ..Rendering::default() });
        let skewed = sim.state.date_header().to_str().unwrap().to_string();
        assert_ne!(skewed, clock);
        let (status, date) = date_of(request(platform, &base, Some("wrong"))).await;
        assert_eq!((status, date), (401, Some(skewed)), "{platform}: skewed");
    }
}
