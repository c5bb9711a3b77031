//! The wfx job-list parser (`GET /jobs` answers) and the job-event parser on arbitrary bytes,
//! with the validation done where they enter (job ids, the definition's artifacts). Errors are fine; panics, hangs and huge
//! allocations are not.
#![no_main]

use cip_update_agent::wfx::client::{parse_event, parse_job_list};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(list) = parse_job_list(data) {
        for job in &list.content {
            // What the daemon reads of each job first.
            let _ = (&job.id, job.workflow.as_ref().map(|w| w.name.len()));
            let _ = job.status.as_ref().map(|s| s.state.len());
            // Its artifacts: names, versions and URIs checked where they enter.
            if let Some(d) = &job.definition {
                let _ = cip_update_agent::job::Definition::parse(d);
            }
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = parse_event(text);
    }
});
