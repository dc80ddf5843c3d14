//! `/search QUERY`: the earlier exchanges most similar to the query, by the
//! cosine similarity of their summaries' embeddings.

use anyhow::{bail, Result};

use super::Flow;
use crate::app::App;
use crate::db;
use crate::model::local::cosine;
use crate::model::Cancel;
use crate::workers::{blob_to_vector, short};

/// How many results are shown.
const RESULTS: usize = 5;

/// Searches the embedded exchange summaries.
pub fn run(app: &mut App, args: &str) -> Result<Flow> {
    let query = args.trim();
    if query.is_empty() {
        bail!("usage: /search QUERY (for example: /search database backups)");
    }
    let embedded = app.model.embed(&[query.to_owned()], &Cancel::new())?;
    let Some(query_vector) = embedded.vectors.into_iter().next() else {
        bail!("the model returned no embedding for the query");
    };

    let mut stmt = app.conn.prepare(
        "SELECT e.id, e.started_at, e.user_input, s.summary, m.vector
         FROM embeddings m
         JOIN summaries s ON s.id = m.summary_id AND s.subject = 'exchange'
         JOIN exchanges e ON e.id = s.subject_id
         WHERE m.model = ?1 AND m.dimension = ?2",
    )?;
    let model = app.model.embedding_model().to_owned();
    let mut hits = stmt
        .query_map(rusqlite::params![model, query_vector.len() as i64], |row| {
            let blob: Vec<u8> = row.get(4)?;
            Ok((
                cosine(&query_vector, &blob_to_vector(&blob)),
                row.get::<_, i64>(0)?,
                row.get::<_, i64>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, String>(3)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    hits.sort_by(|a, b| b.0.total_cmp(&a.0));

    if hits.is_empty() {
        let (completed, waiting): (i64, i64) = app.conn.query_row(
            "SELECT (SELECT count(*) FROM exchanges WHERE status = 'completed'),
                    (SELECT count(*) FROM exchanges WHERE status = 'completed'
                         AND (summarized = 0 OR EXISTS (SELECT 1 FROM summaries s
                              WHERE s.subject = 'exchange' AND s.subject_id = exchanges.id
                                AND s.embedded = 0)))",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )?;
        if completed == 0 {
            println!("no earlier exchanges to search yet");
        } else if waiting > 0 {
            println!(
                "nothing is embedded with {model} yet: {waiting} of {completed} exchanges are \
                 still waiting for a summary or an embedding (see /workers)"
            );
        } else {
            println!("no exchange embedded with {model} matches");
        }
        return Ok(Flow::Continue);
    }
    for (score, id, started_at, input, summary) in hits.into_iter().take(RESULTS) {
        println!(
            "{score:.3}  exchange {id}, {}  \"{}\"",
            db::format_time(started_at),
            short(&input, 60)
        );
        println!("       {}", short(&summary, 100));
    }
    Ok(Flow::Continue)
}
