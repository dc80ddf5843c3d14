//! Embeds every summary that has no embedding.
//!
//! One unit of work is one model call for up to [`EMBEDDING_BATCH`]
//! summaries: an HTTP model embeds them in one request, so a pause waits
//! for at most one request, and a large backlog does not cost a request per
//! summary.

use std::sync::Arc;

use anyhow::Result;
use nu_coord::{BackgroundTask, Outcome, TaskError, Unit};
use rusqlite::{named_params, params, Connection};
use tracing::debug;

use super::{capped_count_sql, fail, stopped, Setup, EMBEDDING_GENERATOR};
use crate::db::{self, failed_jobs};
use crate::model::{Embeddings, Model, ModelError};

/// The `config` key remembering the embedding model last used.
const MODEL_KEY: &str = "embedding.model";

/// Summaries embedded per unit of work.
pub const EMBEDDING_BATCH: usize = 16;

/// The embedding generator.
pub struct EmbeddingGenerator {
    conn: Connection,
    model: Arc<dyn Model>,
    setup: Setup,
    pending_sql: String,
    count_sql: String,
}

impl EmbeddingGenerator {
    /// Creates it, with its own connection.
    ///
    /// # Errors
    ///
    /// The database can not be opened.
    pub fn new(setup: &Setup) -> Result<Self> {
        let conn = setup.connect()?;
        // Vectors from another embedding model can not be compared with the
        // current one's: have those summaries embedded again, and give the
        // new model its own tries at those the old one gave up on.
        let model = setup.model.embedding_model();
        if db::config_get(&conn, MODEL_KEY)?.as_deref() != Some(model) {
            conn.execute(
                "DELETE FROM failed_jobs WHERE worker = ?1",
                [EMBEDDING_GENERATOR],
            )?;
            db::config_set(&conn, MODEL_KEY, model)?;
        }
        conn.execute(
            "UPDATE summaries SET embedded = 0 WHERE embedded = 1 AND id IN
                 (SELECT summary_id FROM embeddings WHERE model != ?1)",
            [model],
        )?;
        // `embedded = 0` matches the partial index `summaries_to_embed`.
        let filter = format!(
            "s.embedded = 0 AND {}",
            failed_jobs::may_try_sql("CAST(s.id AS TEXT)")
        );
        Ok(Self {
            conn,
            model: setup.model.clone(),
            setup: setup.clone(),
            pending_sql: format!(
                "SELECT s.id, s.summary FROM summaries s WHERE {filter}
                 ORDER BY s.id LIMIT {EMBEDDING_BATCH}"
            ),
            count_sql: capped_count_sql(&format!("SELECT 1 FROM summaries s WHERE {filter}")),
        })
    }
}

/// Stores a vector as little-endian `f32`s.
pub fn vector_to_blob(vector: &[f32]) -> Vec<u8> {
    vector.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Reads a vector stored by [`vector_to_blob`].
pub fn blob_to_vector(blob: &[u8]) -> Vec<f32> {
    blob.chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

impl BackgroundTask for EmbeddingGenerator {
    type Item = Vec<(i64, String)>;

    fn next_item(&mut self, unit: &Unit<'_>) -> Result<Option<Self::Item>, TaskError> {
        let params = named_params! { ":worker": EMBEDDING_GENERATOR, ":now": db::now_ms() };
        let backlog: i64 = self
            .conn
            .query_row(&self.count_sql, params, |row| row.get(0))?;
        unit.set_backlog(backlog as u64);
        let mut stmt = self.conn.prepare_cached(&self.pending_sql)?;
        let batch = stmt
            .query_map(params, |row| Ok((row.get(0)?, row.get(1)?)))?
            .collect::<rusqlite::Result<Vec<(i64, String)>>>()?;
        Ok((!batch.is_empty()).then_some(batch))
    }

    fn describe(&self, batch: &Self::Item) -> String {
        match (batch.first(), batch.last()) {
            (Some((first, _)), Some((last, _))) if first != last => {
                format!("summaries {first}–{last}")
            }
            (Some((id, _)), _) => format!("summary {id}"),
            _ => "nothing".to_owned(),
        }
    }

    fn run_item(&mut self, batch: Self::Item, unit: &Unit<'_>) -> Result<Outcome, TaskError> {
        let texts: Vec<String> = batch.iter().map(|(_, text)| text.clone()).collect();
        let what = self.describe(&batch);
        let embeddings = match self.embed(&texts, unit)? {
            Ok(e) if e.vectors.len() == batch.len() => e,
            Ok(e) => {
                let error = format!("{} vectors for {} texts", e.vectors.len(), batch.len());
                return Err(self.fail_all(&batch, &what, &error));
            }
            Err(ModelError::Cancelled) => return Err(stopped()),
            // Refused for what one text holds, perhaps: find which, rather
            // than hold the whole batch back.
            Err(err) if batch.len() > 1 && !err.is_transient() => {
                return self.one_by_one(batch, &what, unit);
            }
            Err(err) => return Err(self.fail_all(&batch, &what, &err.to_string())),
        };
        self.store(&batch, &embeddings)?;
        debug!(count = batch.len(), "summaries embedded");
        let dimension = embeddings.vectors.first().map_or(0, Vec::len);
        Ok(
            Outcome::new(format!("{what} embedded ({dimension} dimensions)"))
                .with_cost(embeddings.cost),
        )
    }
}

impl EmbeddingGenerator {
    /// Asks the model for vectors, counted as parked while it works (it
    /// touches nothing of ours). The outer error is a stop requested
    /// meanwhile: the unit then returns without writing.
    fn embed(
        &self,
        texts: &[String],
        unit: &Unit<'_>,
    ) -> Result<Result<Embeddings, ModelError>, TaskError> {
        let (result, checkpoint) = unit.parked(|| self.model.embed(texts, &self.setup.cancel));
        if checkpoint.is_shutdown() {
            return Err(stopped());
        }
        Ok(result)
    }

    /// Stores the vectors of a batch, one transaction for all.
    fn store(&mut self, batch: &[(i64, String)], embeddings: &Embeddings) -> rusqlite::Result<()> {
        // Stored under the configured name, which is what `/search` and the
        // re-embedding after a change of model compare.
        let model = self.model.embedding_model().to_owned();
        let tx = self.conn.transaction()?;
        let now = db::now_ms();
        for ((id, text), vector) in batch.iter().zip(&embeddings.vectors) {
            // The summary may have been deleted or rewritten in place
            // meanwhile (a conversation's summary keeps its id); it then
            // has a new embedding coming, and this one is dropped.
            tx.execute(
                "INSERT INTO embeddings (summary_id, model, dimension, vector, created_at)
                 SELECT ?1, ?2, ?3, ?4, ?5
                 WHERE EXISTS (SELECT 1 FROM summaries WHERE id = ?1 AND summary = ?6)
                 ON CONFLICT(summary_id) DO UPDATE SET model = excluded.model,
                     dimension = excluded.dimension, vector = excluded.vector,
                     created_at = excluded.created_at",
                params![
                    id,
                    model,
                    vector.len() as i64,
                    vector_to_blob(vector),
                    now,
                    text
                ],
            )?;
            tx.execute(
                "UPDATE summaries SET embedded = 1 WHERE id = ?1 AND summary = ?2",
                params![id, text],
            )?;
            failed_jobs::clear_failure(&tx, EMBEDDING_GENERATOR, &id.to_string())?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Embeds the items of a refused batch one at a time: those that go
    /// through are stored, those refused again are recorded on their own.
    fn one_by_one(
        &mut self,
        batch: Vec<(i64, String)>,
        what: &str,
        unit: &Unit<'_>,
    ) -> Result<Outcome, TaskError> {
        let (mut done, mut cost, mut last_error) = (0, 0.0, None);
        for item in batch.iter().cloned() {
            let single = std::slice::from_ref(&item);
            match self.embed(std::slice::from_ref(&item.1), unit)? {
                Ok(e) if e.vectors.len() == 1 => {
                    self.store(single, &e)?;
                    done += 1;
                    cost += e.cost;
                }
                Ok(_) => {
                    last_error = Some(self.fail_all(
                        single,
                        &format!("summary {}", item.0),
                        "no vector returned",
                    ))
                }
                Err(ModelError::Cancelled) => return Err(stopped()),
                Err(err) => {
                    let what = format!("summary {}", item.0);
                    last_error = Some(self.fail_all(single, &what, &err.to_string()));
                }
            }
        }
        match last_error {
            Some(err) if done == 0 => Err(err),
            _ => Ok(Outcome::new(format!(
                "{what}: {done} of {} embedded one by one",
                batch.len()
            ))
            .with_cost(cost)),
        }
    }

    fn fail_all(&self, batch: &[(i64, String)], what: &str, error: &str) -> TaskError {
        for (id, _) in &batch[1..] {
            let _ = failed_jobs::record_failure(
                &self.conn,
                EMBEDDING_GENERATOR,
                &id.to_string(),
                error,
                self.setup.retry,
            );
        }
        let first = batch[0].0.to_string();
        fail(
            &self.conn,
            &self.setup,
            EMBEDDING_GENERATOR,
            &first,
            what,
            error,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_round_trip_through_blobs() {
        let v = vec![0.25, -1.5, 3.0e-7, f32::MAX];
        assert_eq!(blob_to_vector(&vector_to_blob(&v)), v);
    }
}
