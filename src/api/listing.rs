//! A page of a tenant's jobs, bounded twice: in jobs (the page size asked for) and in
//! bytes ([`limits::PAGE_BYTES`]), so that a page of jobs with large specs cannot make the
//! gateway build, nor a client read, an answer of hundreds of megabytes. The store is read
//! in batches sized from the jobs seen so far, so that a batch of the largest jobs stays
//! near the budget; the page's last job is the cursor of the next.

use uuid::Uuid;

use crate::model::{json_bytes, limits, Job};
use crate::store::{ListQuery, Store, StoreResult};

/// Jobs in the first batch: the default page, read in one query.
const FIRST_BATCH: usize = 50;
/// Jobs in any later batch at most.
const MAX_BATCH: usize = 100;

/// A page of jobs, newest first.
pub struct Page {
    pub jobs: Vec<Job>,
    /// The id to continue after; `None` on the last page.
    pub next: Option<Uuid>,
}

/// The tenant's jobs that `query` selects, up to `query.limit` of them and about
/// [`limits::PAGE_BYTES`] of JSON (always at least one job, whatever its size).
pub async fn page(store: &dyn Store, tenant: &str, query: &ListQuery) -> StoreResult<Page> {
    let mut jobs: Vec<Job> = vec![];
    let mut bytes = 0;
    let mut batch = query.limit.min(FIRST_BATCH);
    let mut before = query.before;
    loop {
        let read = store
            .list(
                tenant,
                &ListQuery {
                    before,
                    limit: batch,
                    ..query.clone()
                },
            )
            .await?;
        let ended = read.len() < batch;
        for job in read {
            bytes += json_bytes(&job);
            before = Some(job.id);
            jobs.push(job);
            if jobs.len() == query.limit || bytes >= limits::PAGE_BYTES {
                return Ok(Page { next: before, jobs });
            }
        }
        if ended {
            return Ok(Page { jobs, next: None });
        }
        let average = (bytes / jobs.len()).max(1);
        batch = ((limits::PAGE_BYTES - bytes) / average)
            .clamp(1, MAX_BATCH)
            .min(query.limit - jobs.len());
    }
}
