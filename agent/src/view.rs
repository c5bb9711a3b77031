//! How `cip-update-agent install` shows an install: a progress bar on a terminal, plain lines
//! otherwise (logs, CI, a serial console), never both.

use std::io::Write;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use cip_swupdate::install::Observer;
use cip_swupdate::{ProgressMsg, RecoveryStatus};

/// What the daemon is doing, in words.
pub fn describe(m: &ProgressMsg) -> String {
    match m.status {
        RecoveryStatus::Start => "started".into(),
        RecoveryStatus::Run | RecoveryStatus::Progress if !m.cur_image.is_empty() => format!(
            "step {}/{} {} ({}) {}%",
            m.cur_step.min(m.nsteps),
            m.nsteps,
            m.cur_image,
            m.hnd_name,
            m.cur_percent.min(100)
        ),
        // No image yet: parsing sw-description; after the last step (2022.12): finishing.
        RecoveryStatus::Run | RecoveryStatus::Progress if m.cur_step == 0 => "parsing".into(),
        RecoveryStatus::Run | RecoveryStatus::Progress => "finishing".into(),
        RecoveryStatus::Success => "SUCCESS".into(),
        RecoveryStatus::Failure => "FAILURE".into(),
        RecoveryStatus::Download => format!("downloading {}%", m.dwl_percent.min(100)),
        RecoveryStatus::Done => "done".into(),
        RecoveryStatus::Idle => "idle".into(),
        RecoveryStatus::Subprocess => "subprocess".into(),
    }
}

/// Plain-line reporting: one line per new step or status and per 10 % streamed.
pub struct PlainView<W: Write> {
    out: W,
    last_decile: Option<u64>,
    last_line: String,
}

impl<W: Write> PlainView<W> {
    pub fn new(out: W) -> Self {
        PlainView {
            out,
            last_decile: None,
            last_line: String::new(),
        }
    }

    fn line(&mut self, s: &str) {
        // A broken stderr must not stop an install.
        let _ = writeln!(self.out, "{s}");
    }
}

impl<W: Write> Observer for PlainView<W> {
    // The commit's crash point of the fault injection (crate::faults).
    fn committed(&mut self) {
        crate::faults::point("commit");
    }
    fn streamed(&mut self, bytes: u64, total: Option<u64>) {
        let Some(total) = total.filter(|t| *t > 0) else {
            return;
        };
        let decile = (bytes.min(total) * 10 / total).min(10);
        if self.last_decile != Some(decile) {
            self.last_decile = Some(decile);
            self.line(&format!(
                "sent {}% ({} of {} bytes)",
                decile * 10,
                bytes,
                total
            ));
        }
    }

    fn progress(&mut self, m: &ProgressMsg) {
        // Percent lines of a step only every 25 %, so a big image does not flood the log.
        let text = match m.status {
            RecoveryStatus::Progress if m.cur_percent % 25 != 0 => return,
            _ => describe(m),
        };
        if text != self.last_line {
            self.line(&format!("swupdate: {text}"));
            self.last_line = text;
        }
    }
}

/// A progress bar on a terminal.
pub struct BarView {
    bar: ProgressBar,
}

impl BarView {
    pub fn new(total: Option<u64>) -> Self {
        let bar = match total {
            Some(t) => ProgressBar::with_draw_target(Some(t), ProgressDrawTarget::stderr()),
            None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
        };
        let style = if total.is_some() {
            "{spinner} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {msg}"
        } else {
            "{spinner} {bytes} {bytes_per_sec} {msg}"
        };
        bar.set_style(
            ProgressStyle::with_template(style)
                .expect("static template")
                .progress_chars("=> "),
        );
        bar.enable_steady_tick(Duration::from_millis(200));
        BarView { bar }
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl Observer for BarView {
    // The commit's crash point of the fault injection (crate::faults).
    fn committed(&mut self) {
        crate::faults::point("commit");
    }
    fn streamed(&mut self, bytes: u64, _total: Option<u64>) {
        self.bar.set_position(bytes);
    }

    fn progress(&mut self, m: &ProgressMsg) {
        self.bar.set_message(describe(m));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(status: RecoveryStatus, pct: u32) -> ProgressMsg {
        ProgressMsg {
            status,
            dwl_percent: 0,
            dwl_bytes: 0,
            nsteps: 2,
            cur_step: 1,
            cur_percent: pct,
            cur_image: "rootfs.img".into(),
            hnd_name: "raw".into(),
            source: 4,
            info: String::new(),
        }
    }

    #[test]
    fn plain_lines_are_few_and_clear() {
        let mut out = Vec::new();
        {
            let mut v = PlainView::new(&mut out);
            for b in (0..=1000).step_by(7) {
                v.streamed(b, Some(1000));
            }
            v.streamed(1000, Some(1000));
            for p in 0..=100 {
                let m = msg(RecoveryStatus::Progress, p);
                v.progress(&m);
                v.progress(&m);
            }
        }
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "sent 0% (0 of 1000 bytes)");
        assert_eq!(lines[10], "sent 100% (1000 of 1000 bytes)");
        assert_eq!(
            &lines[11..],
            [
                "swupdate: step 1/2 rootfs.img (raw) 0%",
                "swupdate: step 1/2 rootfs.img (raw) 25%",
                "swupdate: step 1/2 rootfs.img (raw) 50%",
                "swupdate: step 1/2 rootfs.img (raw) 75%",
                "swupdate: step 1/2 rootfs.img (raw) 100%",
            ]
        );
    }

    #[test]
    fn describe_clamps_what_2022_12_overshoots() {
        // 2022.12 sends a last RUN with cur_step = nsteps + 1.
        let mut m = msg(RecoveryStatus::Run, 100);
        m.cur_step = 3;
        assert_eq!(describe(&m), "step 2/2 rootfs.img (raw) 100%");
        m.cur_image.clear();
        assert_eq!(describe(&m), "finishing");
        m.cur_step = 0;
        assert_eq!(describe(&m), "parsing");
    }
}
