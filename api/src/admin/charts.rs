//! The dashboard's charts of the fleet history (`/admin/charts`): line
//! charts as server-rendered SVG (maud, no chart library, nothing from a
//! CDN), one point per minute, the alert thresholds drawn from the
//! configured rules, alert firings as marks. A small static script
//! (`/admin/static/charts.js`) swaps in a fresh fragment every 5 s.

use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{Html, IntoResponse};
use chrono::{DateTime, Utc};
use ferry_common::config::AlertThresholds;
use ferry_common::history::{self, Series, Window};
use maud::{Markup, html};
use serde::Deserialize;

use super::AdminError;
use super::html::layout_page;
use super::session::Session;
use crate::state::AppState;

/// The live-update script, served as a static file (no inline script).
pub const CHARTS_JS: &str = include_str!("charts.js");

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 200.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 14.0;
const BOTTOM: f64 = 28.0;

/// Line colours, in order of a chart's lines.
const COLOURS: &[&str] = &[
    "#1d3557", "#2e7d32", "#b00020", "#b36b00", "#6a1b9a", "#00838f",
];

#[derive(Deserialize)]
pub struct WindowQuery {
    window: Option<String>,
}

fn window_of(q: &WindowQuery) -> Result<Window, AdminError> {
    match q.window.as_deref() {
        None => Ok(Window::Hour),
        Some(w) => Window::parse(w)
            .ok_or_else(|| AdminError::BadRequest(format!("window {w:?}: use 1h or 24h"))),
    }
}

async fn read(state: &AppState, window: Window) -> Result<Series, AdminError> {
    let store = state.queue.store();
    Ok(history::read::read(store, store.history().now_minute(), window.minutes()).await?)
}

/// `GET /admin/charts[?window=24h]`: the page.
pub async fn page(
    session: Session,
    State(state): State<AppState>,
    Query(q): Query<WindowQuery>,
) -> Result<impl IntoResponse, AdminError> {
    let window = window_of(&q)?;
    let series = read(&state, window).await?;
    let body = html! {
        h1 { "History" }
        p {
            "Fleet-wide, one point per minute (UTC), live every 5 s. Window: "
            @for w in [Window::Hour, Window::Day] {
                @if w == window { strong { (w.as_str()) } } @else {
                    a href={ "/admin/charts?window=" (w.as_str()) } { (w.as_str()) }
                }
                " "
            }
        }
        div #charts data-window=(window.as_str()) {
            (charts(&series, state.alerts.thresholds()))
        }
        script src="/admin/static/charts.js" defer {}
    };
    Ok(Html(layout_page("History", &session, body).into_string()))
}

/// `GET /admin/charts/fragment[?window=24h]`: the charts alone, for the
/// script to swap in.
pub async fn fragment(
    _session: Session,
    State(state): State<AppState>,
    Query(q): Query<WindowQuery>,
) -> Result<impl IntoResponse, AdminError> {
    let series = read(&state, window_of(&q)?).await?;
    Ok(Html(
        charts(&series, state.alerts.thresholds()).into_string(),
    ))
}

/// `GET /admin/static/charts.js`.
pub async fn script() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        CHARTS_JS,
    )
}

/// One line of a chart.
pub struct Line {
    pub label: String,
    pub values: Vec<f64>,
}

/// One chart: its lines, the threshold its alert rule fires above, and
/// the minutes an alert started firing.
pub struct Chart {
    pub id: String,
    pub title: String,
    pub unit: &'static str,
    pub lines: Vec<Line>,
    pub threshold: Option<(f64, String)>,
    pub marks: Vec<usize>,
}

/// Every chart of a window.
pub fn charts(s: &Series, th: &AlertThresholds) -> Markup {
    let n = s.minutes;
    let marks: Vec<usize> = (0..n)
        .filter(|&i| s.alerts.values().any(|v| v[i] > 0))
        .collect();
    let u = |v: &[u64]| v.iter().map(|&x| x as f64).collect::<Vec<f64>>();
    let mut all = vec![
        Chart {
            id: "wechat-requests".into(),
            title: "/wechat requests per minute".into(),
            unit: "/min",
            lines: vec![Line {
                label: "requests".into(),
                values: u(&s.wechat.requests),
            }],
            threshold: (th.requests_per_minute > 0).then(|| {
                let t = f64::from(th.requests_per_minute);
                (t, format!("alert above {t} requests/min"))
            }),
            marks: marks.clone(),
        },
        Chart {
            id: "wechat-errors".into(),
            title: "/wechat server error ratio".into(),
            unit: "%",
            lines: vec![Line {
                label: "error %".into(),
                values: s.wechat.error_ratio.iter().map(|r| r * 100.0).collect(),
            }],
            threshold: Some((
                th.error_rate * 100.0,
                format!("alert above {} %", th.error_rate * 100.0),
            )),
            marks: marks.clone(),
        },
        Chart {
            id: "wechat-p95".into(),
            title: "/wechat p95 response time".into(),
            unit: "s",
            lines: vec![Line {
                label: "p95".into(),
                values: s.wechat.p95_secs.clone(),
            }],
            threshold: Some((
                th.response_time.as_secs_f64(),
                format!("alert above {} s", th.response_time.as_secs_f64()),
            )),
            marks,
        },
    ];
    for (queue, q) in &s.queues {
        all.push(Chart {
            id: format!("queue-{queue}"),
            title: format!("{queue} jobs per minute"),
            unit: "/min",
            lines: vec![
                Line {
                    label: "in".into(),
                    values: u(&q.jobs_in),
                },
                Line {
                    label: "out".into(),
                    values: u(&q.completed),
                },
                Line {
                    label: "failures".into(),
                    values: u(&q.failures),
                },
            ],
            threshold: None,
            marks: Vec::new(),
        });
    }
    for (provider, p) in &s.providers {
        all.push(Chart {
            id: format!("provider-{provider}-calls"),
            title: format!("{provider} calls per minute by outcome"),
            unit: "/min",
            lines: p
                .outcomes
                .iter()
                .map(|(outcome, v)| Line {
                    label: outcome.clone(),
                    values: u(v),
                })
                .collect(),
            threshold: None,
            marks: Vec::new(),
        });
        all.push(Chart {
            id: format!("provider-{provider}-p95"),
            title: format!("{provider} p95 call latency"),
            unit: "s",
            lines: vec![Line {
                label: "p95".into(),
                values: p.p95_secs.clone(),
            }],
            threshold: None,
            marks: Vec::new(),
        });
    }
    let firings: Vec<(String, u64)> = s
        .alerts
        .iter()
        .map(|(rule, v)| (rule.clone(), v.iter().sum()))
        .collect();
    html! {
        p.charts-alerts {
            "Alert firings in this window: "
            @if firings.is_empty() { "none" }
            @for (i, (rule, count)) in firings.iter().enumerate() {
                @if i > 0 { ", " }
                span data-alert=(rule) data-count=(count) { (rule) " × " (count) }
            }
        }
        @for c in &all { (svg(c, s.first_minute)) }
    }
}

/// Rounds up to 1, 2 or 5 times a power of ten (an axis maximum).
pub fn nice_max(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * p)
        .find(|&m| m >= v * (1.0 - 1e-9))
        .unwrap_or(10.0 * p)
}

/// The x of point `i` of `n`.
pub fn x_of(i: usize, n: usize) -> f64 {
    let w = WIDTH - LEFT - RIGHT;
    if n <= 1 {
        return LEFT;
    }
    LEFT + w * i as f64 / (n - 1) as f64
}

/// The y of `v` on an axis from 0 to `max`.
pub fn y_of(v: f64, max: f64) -> f64 {
    let h = HEIGHT - TOP - BOTTOM;
    TOP + h - h * (v / max).clamp(0.0, 1.0)
}

/// A polyline's `points` attribute.
pub fn points(values: &[f64], max: f64) -> String {
    let n = values.len();
    values
        .iter()
        .enumerate()
        .map(|(i, &v)| format!("{:.1},{:.1}", x_of(i, n), y_of(v, max)))
        .collect::<Vec<_>>()
        .join(" ")
}

fn fmt_value(v: f64) -> String {
    if v == v.trunc() && v.abs() < 1e15 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_owned()
    }
}

fn minute_label(minute: u64) -> String {
    DateTime::<Utc>::from_timestamp((minute * 60) as i64, 0)
        .map_or_else(|| "?".into(), |t| t.format("%H:%M").to_string())
}

/// One chart as SVG.
pub fn svg(c: &Chart, first_minute: u64) -> Markup {
    let n = c.lines.first().map_or(0, |l| l.values.len());
    let peak = c
        .lines
        .iter()
        .flat_map(|l| l.values.iter().copied())
        .fold(0.0, f64::max);
    let max = nice_max(peak.max(c.threshold.as_ref().map_or(0.0, |t| t.0 * 1.2)));
    let title_id = format!("{}-title", c.id);
    let last = first_minute + n.saturating_sub(1) as u64;
    let ticks: Vec<usize> = if n > 1 {
        (0..=4).map(|k| k * (n - 1) / 4).collect()
    } else {
        vec![0]
    };
    let desc = format!(
        "{} from {} to {} UTC, one point per minute; peak {} {}",
        c.title,
        minute_label(first_minute),
        minute_label(last),
        fmt_value(peak),
        c.unit
    );
    html! {
        figure.chart {
            svg id=(c.id) class="chart" role="img" aria-labelledby=(title_id)
                viewBox={ "0 0 " (WIDTH) " " (HEIGHT) } width=(WIDTH) height=(HEIGHT)
                xmlns="http://www.w3.org/2000/svg" data-points=(n) data-peak=(fmt_value(peak))
                data-max=(fmt_value(max)) {
                title id=(title_id) { (c.title) }
                desc { (desc) }
                // Axes and value labels: 0, half, max.
                line x1=(LEFT) y1=(TOP) x2=(LEFT) y2=(HEIGHT - BOTTOM) stroke="#888" {}
                line x1=(LEFT) y1=(HEIGHT - BOTTOM) x2=(WIDTH - RIGHT) y2=(HEIGHT - BOTTOM) stroke="#888" {}
                @for v in [0.0, max / 2.0, max] {
                    text x=(LEFT - 4.0) y=(y_of(v, max) + 4.0) text-anchor="end" font-size="11" {
                        (fmt_value(v)) " " (c.unit)
                    }
                    line x1=(LEFT) y1=(y_of(v, max)) x2=(WIDTH - RIGHT) y2=(y_of(v, max)) stroke="#eee" {}
                }
                @for &i in &ticks {
                    text x=(x_of(i, n)) y=(HEIGHT - 8.0) text-anchor="middle" font-size="11" {
                        (minute_label(first_minute + i as u64))
                    }
                }
                @if let Some((t, label)) = &c.threshold {
                    line.threshold x1=(LEFT) y1=(y_of(*t, max)) x2=(WIDTH - RIGHT) y2=(y_of(*t, max))
                        stroke="#b00020" stroke-dasharray="6 4" data-threshold=(fmt_value(*t)) {
                        title { (label) }
                    }
                }
                @for &i in &c.marks {
                    line.alert-mark x1=(x_of(i, n)) y1=(TOP) x2=(x_of(i, n)) y2=(HEIGHT - BOTTOM)
                        stroke="#b00020" stroke-width="2" opacity="0.5" data-minute=(minute_label(first_minute + i as u64)) {
                        title { "alert fired at " (minute_label(first_minute + i as u64)) " UTC" }
                    }
                }
                @for (k, l) in c.lines.iter().enumerate() {
                    @let line_peak = l.values.iter().copied().fold(0.0, f64::max);
                    polyline fill="none" stroke=(COLOURS[k % COLOURS.len()]) stroke-width="1.5"
                        points=(points(&l.values, max)) data-series=(l.label)
                        data-points=(l.values.len()) data-peak=(fmt_value(line_peak)) {
                        title { (l.label) ", peak " (fmt_value(line_peak)) " " (c.unit) }
                    }
                }
            }
            figcaption {
                (c.title) ": "
                @for (k, l) in c.lines.iter().enumerate() {
                    span style={ "color:" (COLOURS[k % COLOURS.len()]) } { "■ " (l.label) } " "
                }
                @if let Some((_, label)) = &c.threshold { span style="color:#b00020" { "- - " (label) } }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chart(values: Vec<f64>, threshold: Option<f64>) -> Chart {
        Chart {
            id: "c".into(),
            title: "t".into(),
            unit: "/min",
            lines: vec![Line {
                label: "requests".into(),
                values,
            }],
            threshold: threshold.map(|t| (t, "limit".into())),
            marks: vec![1],
        }
    }

    #[test]
    fn axis_maxima_are_round() {
        assert_eq!(nice_max(0.0), 1.0);
        assert_eq!(nice_max(7.0), 10.0);
        assert_eq!(nice_max(120.0), 200.0);
        assert_eq!(nice_max(0.03), 0.05);
        assert_eq!(nice_max(100.0), 100.0);
    }

    #[test]
    fn points_map_minutes_to_x_and_values_to_y() {
        let p = points(&[0.0, 50.0, 100.0], 100.0);
        let (bottom, top) = (HEIGHT - BOTTOM, TOP);
        let mid = WIDTH - RIGHT - (WIDTH - LEFT - RIGHT) / 2.0;
        assert_eq!(
            p,
            format!(
                "{LEFT:.1},{bottom:.1} {mid:.1},{:.1} {:.1},{top:.1}",
                (top + bottom) / 2.0,
                WIDTH - RIGHT
            )
        );
        // A value above the axis is drawn at its top, never outside.
        assert_eq!(y_of(250.0, 100.0), TOP);
    }

    #[test]
    fn the_svg_carries_its_points_peak_threshold_and_marks() {
        let out = svg(&chart(vec![3.0, 120.0, 5.0], Some(100.0)), 0).into_string();
        assert!(out.contains(r#"data-points="3""#), "{out}");
        assert!(out.contains(r#"data-peak="120""#), "{out}");
        assert!(out.contains(r#"data-threshold="100""#), "{out}");
        assert!(out.contains(r#"data-max="200""#), "{out}");
        assert!(out.contains(r#"class="alert-mark""#), "{out}");
        assert!(out.contains("00:00") && out.contains("00:02"), "UTC labels");
        assert!(
            out.contains(r#"role="img""#) && out.contains("<title"),
            "accessible"
        );
        let y_threshold = format!(r#"y1="{}""#, y_of(100.0, 200.0));
        assert!(out.contains(&y_threshold), "{out}");
    }
}
