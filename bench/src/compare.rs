//! `--compare`: results of several runs (JSON written by `--json`) side by side.
//!
//! Per run: the most subscribers reached with less than 1 % loss (sequence gaps) and at least
//! 99 % of the published packets delivered to each (deliv%), all of them connected
//! (every step up to it passing; ">=" when the ramp ended without failing), the server's CPU,
//! CPU per packet and RSS per subscriber at that step, and join times (p50/p99 over all
//! subscribers of the run, and over the first step's, joined on an unloaded server). Steps
//! where other processes used more than 20 % of a core are marked "!": rerun them.

use serde_json::Value;

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

/// Other processes took more than a fifth of a core during the step: its figures are suspect.
fn disturbed(s: &Value) -> bool {
    f(&s["other_cpu_pct"]) > 20.0
}

/// Index of the last step of the passing prefix, and whether the ramp ever failed.
fn last_good(steps: &[Value]) -> (Option<usize>, bool) {
    let mut good = None;
    for (i, s) in steps.iter().enumerate() {
        let deliv = f(&s["delivered_pct"]);
        let ok = f(&s["loss_pct"]) < 1.0
            && (deliv.is_nan() || deliv >= 99.0)
            && s["connected"] == s["subscribers"]
            && s["packets"].as_u64().unwrap_or(0) > 0;
        if !ok {
            return (good, true);
        }
        good = Some(i);
    }
    (good, false)
}

pub fn print(files: &[String]) {
    let runs: Vec<(String, Value)> = files
        .iter()
        .map(|p| {
            let text = std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{p}: {e}"));
            let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{p}: {e}"));
            let mut kind = v["server"]["kind"].as_str().unwrap_or("sluice").to_string();
            // Janus settings off their defaults, in the column name.
            let j = &v["janus"];
            if j["event_loops"].as_u64().unwrap_or(0) > 0 {
                kind += &format!(" loops={}", j["event_loops"]);
            }
            if j["relay_threads"].as_u64().unwrap_or(0) > 0 {
                kind += &format!(" thr={}", j["relay_threads"]);
            }
            if j["keyframe_buffer"] == false {
                kind += " no-kf-buf";
            }
            (kind, v)
        })
        .collect();
    if runs.is_empty() {
        return;
    }
    let empty = Vec::new();
    let steps = |v: &Value| v["steps"].as_array().cloned().unwrap_or_else(|| empty.clone());
    let args = &runs[0].1["args"];
    println!(
        "side by side: video {} at {} fps, keyframe every {} s, + Opus; steps of {} subscribers, {} s each",
        args["bitrate"].as_str().unwrap_or("?"),
        args["fps"],
        args["gop"],
        args["step"],
        args["step_secs"]
    );
    // Per-step rows, one block of columns per run.
    const BLOCK: usize = 66;
    let mut names = " ".repeat(5);
    let mut head = format!("{:>5}", "subs");
    for (k, _) in &runs {
        names += &format!(" | {k:^BLOCK$}");
        head += &format!(
            " | {:>5} {:>8} {:>6} {:>6} {:>6} {:>7} {:>7} {:>6} {:>6}",
            "conn", "pkts/s", "loss%", "deliv%", "cpu%", "us/pkt", "RSS MB", "bench%", "other%"
        );
    }
    println!("{names}\n{head}");
    let rows = runs.iter().map(|(_, v)| steps(v).len()).max().unwrap_or(0);
    for i in 0..rows {
        let subs = runs.iter().find_map(|(_, v)| steps(v).get(i).map(|s| s["subscribers"].clone()));
        let mut line = format!("{:>5}", subs.map(|s| s.to_string()).unwrap_or_default());
        for (_, v) in &runs {
            match steps(v).get(i) {
                Some(s) => {
                    line += &format!(
                        " | {:>5} {:>8.0} {:>6.2} {:>6.1} {:>6.1} {:>7.2} {:>7.1} {:>6.0} {:>5.0}{}",
                        s["connected"].to_string(),
                        f(&s["packets_per_s"]),
                        f(&s["loss_pct"]),
                        f(&s["delivered_pct"]),
                        f(&s["server_cpu_pct"]),
                        f(&s["us_cpu_per_packet"]),
                        f(&s["server_rss_mb"]),
                        f(&s["bench_cpu_pct"]),
                        f(&s["other_cpu_pct"]),
                        if disturbed(s) { "!" } else { " " }
                    )
                }
                None => line += &format!(" | {:^BLOCK$}", "-"),
            }
        }
        println!("{line}");
    }
    // Summary.
    println!();
    let w = runs.iter().map(|(k, _)| k.len()).max().unwrap_or(0).max(16);
    let mut head = format!("{:<44}", "");
    for (k, _) in &runs {
        head += &format!(" {k:>w$}");
    }
    println!("{head}");
    let mut lines: Vec<(String, Vec<String>)> = [
        "max subscribers, < 1% lost or undelivered",
        "  server CPU % at that step",
        "  server us CPU per packet at that step",
        "server us CPU per packet, median of passing",
        "  server RSS per subscriber (KB)",
        "  packets/s received at that step",
        "  machine CPU % at that step (200 = 2 cores)",
        "steps disturbed by other processes (!)",
        "failing step: subs, loss%, deliv%",
        "  kernel UDP drops subscribers/server",
        "join -> first RTP p50/p99 ms, all",
        "join -> first keyframe p50/p99 ms, all",
        "join -> first RTP p50/p99 ms, 1st step",
        "join -> first keyframe p50/p99 ms, 1st step",
        "server RSS idle + publisher (MB)",
    ]
    .iter()
    .map(|l| (l.to_string(), Vec::new()))
    .collect();
    for (_, v) in &runs {
        let st = steps(v);
        let (good, failed) = last_good(&st);
        let g = good.map(|i| st[i].clone()).unwrap_or(Value::Null);
        let bad = if failed { st.get(good.map_or(0, |i| i + 1)) } else { None };
        let max = match good {
            None => "0".to_string(),
            Some(_) if failed => g["subscribers"].to_string(),
            Some(_) => format!(">={}", g["subscribers"]),
        };
        let pair = |v: &Value, a: &str, b: &str| format!("{:.0} / {:.0}", f(&v[a]), f(&v[b]));
        let first = st.first().cloned().unwrap_or(Value::Null);
        let cells = [
            max,
            format!("{:.0}", f(&g["server_cpu_pct"])),
            format!("{:.2}", f(&g["us_cpu_per_packet"])),
            {
                let mut v: Vec<f64> =
                    st[..good.map_or(0, |i| i + 1)].iter().map(|s| f(&s["us_cpu_per_packet"])).collect();
                v.sort_by(|a, b| a.total_cmp(b));
                v.get(v.len() / 2).map_or("-".into(), |m| format!("{m:.2}"))
            },
            format!("{:.0}", f(&g["rss_per_sub_kb"])),
            format!("{:.0}", f(&g["packets_per_s"])),
            format!("{:.0}", f(&g["machine_cpu_pct"])),
            st.iter().filter(|s| disturbed(s)).count().to_string(),
            bad.map_or("none".into(), |b| {
                format!("{} {:.1} {:.1}", b["subscribers"], f(&b["loss_pct"]), f(&b["delivered_pct"]))
            }),
            bad.map_or("-".into(), |b| {
                format!("{}/{}", b["kernel_drops_subscribers"], b["kernel_drops_others"])
            }),
            pair(&v["join_all"], "join_rtp_ms_p50", "join_rtp_ms_p99"),
            pair(&v["join_all"], "join_key_ms_p50", "join_key_ms_p99"),
            pair(&first, "join_rtp_ms_p50", "join_rtp_ms_p99"),
            pair(&first, "join_key_ms_p50", "join_key_ms_p99"),
            format!("{:.1}", f(&v["server"]["rss_start_mb"])),
        ];
        for (l, c) in lines.iter_mut().zip(cells) {
            l.1.push(c);
        }
    }
    for (label, cells) in lines {
        let mut line = format!("{label:<44}");
        for c in cells {
            line += &format!(" {c:>w$}");
        }
        println!("{line}");
    }
}
