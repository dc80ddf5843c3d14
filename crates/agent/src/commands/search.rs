//! `/search QUERY`: the earlier exchanges most similar to the query, by the
//! cosine similarity of their summaries' embeddings.

use anyhow::{bail, Result};

use super::Flow;
use crate::app::App;
use crate::db;
use crate::model::local::cosine;
use crate::workers::blob_to_vector;

/// How many results are shown.
const RESULTS: usize = 5;

/// Searches the embedded exchange summaries.
pub fn run(app: &mut App, args: &str) -> Result<Flow> {
    let query = args.trim();
    if query.is_empty() {
        bail!("usage: /search QUERY (for example: /search database backups)");
    }
    let embedded = app.model.embed(&[query.to_owned()])?;
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
    let mut hits = stmt
        .query_map(
            rusqlite::params![embedded.model, query_vector.len() as i64],
            |row| {
                let blob: Vec<u8> = row.get(4)?;
                Ok((
                    cosine(&query_vector, &blob_to_vector(&blob)),
                    row.get::<_, i64>(0)?,
                    row.get::<_, i64>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, String>(3)?,
                ))
            },
        )?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    hits.sort_by(|a, b| b.0.total_cmp(&a.0));

    if hits.is_empty() {
        let pending: i64 = app.conn.query_row(
            "SELECT count(*) FROM exchanges WHERE status = 'completed'",
            [],
            |row| row.get(0),
        )?;
        if pending > 0 {
            println!(
                "no embedded exchanges yet; the workers are still summarising and embedding \
                 ({pending} exchanges). See /workers"
            );
        } else {
            println!("no earlier exchanges to search yet");
        }
        return Ok(Flow::Continue);
    }
    for (score, id, started_at, input, summary) in hits.into_iter().take(RESULTS) {
        println!(
            "{score:.3}  exchange {id}, {}  \"{}\"",
            db::format_time(started_at),
            one_line(&input, 60)
        );
        println!("       {}", one_line(&summary, 100));
    }
    Ok(Flow::Continue)
}

fn one_line(text: &str, max: usize) -> String {
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= max {
        flat
    } else {
        format!("{}…", flat.chars().take(max - 1).collect::<String>())
    }
}
