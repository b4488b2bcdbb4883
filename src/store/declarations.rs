//! Declarations acknowledged but not yet written out.
//!
//! A declaration is acknowledged once its incident row exists: status `declaring`, the
//! number allocated, and what was asked kept in `declaration` (JSON). That is one short
//! INSERT, as cheap as any. The incident's state, timeline, outbox rows and timers follow
//! in a second transaction (the intake batches them); it *claims* the row first
//! (`declaring` -> written), so a row is written out exactly once however many processes
//! try: the intake right after the ack, or, after a crash in between, whichever process
//! finds it still `declaring` (see `engine::intake`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Result, Store, StoreTx, decode, from_ms, ms, values_list};
use crate::domain::incident::{Actor, IncidentId};
use crate::domain::severity::Severity;

/// What was asked: everything the domain needs to declare the incident again, the same.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Declaration {
    /// Severity asked for.
    pub severity: Severity,
    /// Title as typed (already checked).
    pub title: String,
    /// Declared as a security incident (`--security`).
    #[serde(default)]
    pub security: bool,
    /// Who declared.
    pub actor: Actor,
    /// The request, recorded on the timeline.
    pub request_id: String,
}

/// A declaration found still `declaring`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingDeclaration {
    /// Its incident number.
    pub id: IncidentId,
    /// What was asked.
    pub declaration: Declaration,
    /// When it was acknowledged (the incident's declaration time).
    pub at: DateTime<Utc>,
}

/// One multi-row INSERT of `declaring` rows; their numbers in the order given.
async fn insert_rows<'e, E>(
    backend: super::Backend,
    executor: E,
    declarations: &[Declaration],
    now: DateTime<Utc>,
) -> Result<Vec<IncidentId>>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    let sql = format!(
        "insert into incidents (status, severity, state, declaration, created_at_ms, updated_at_ms) \
         values {} returning id, declaration",
        values_list(backend, declarations.len(), 6)
    );
    let docs: Vec<String> = declarations
        .iter()
        .map(|d| serde_json::to_string(d).expect("declarations serialize"))
        .collect();
    let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql));
    for (declaration, doc) in declarations.iter().zip(&docs) {
        query = query
            .bind("declaring")
            .bind(declaration.severity.to_string())
            .bind("{}")
            .bind(doc.as_str())
            .bind(ms(now))
            .bind(ms(now));
    }
    let mut returned: Vec<(i64, String)> = query.fetch_all(executor).await?;
    // RETURNING promises no order: match each row to its declaration by content
    // (identical declarations are interchangeable), lowest number first.
    returned.sort();
    Ok(docs
        .iter()
        .map(|doc| {
            let at = returned
                .iter()
                .position(|(_, d)| d == doc)
                .expect("every inserted row is returned");
            IncidentId(returned.remove(at).0)
        })
        .collect())
}

impl StoreTx {
    /// Inserts one `declaring` incident row per declaration (one statement per
    /// [`super::tx::MAX_ROWS_PER_INSERT`]) and returns their numbers, in the order given.
    pub async fn insert_declarations(
        &mut self,
        declarations: &[Declaration],
        now: DateTime<Utc>,
    ) -> Result<Vec<IncidentId>> {
        let mut ids = Vec::with_capacity(declarations.len());
        for chunk in declarations.chunks(super::tx::MAX_ROWS_PER_INSERT) {
            ids.extend(insert_rows(self.backend, &mut *self.tx, chunk, now).await?);
        }
        Ok(ids)
    }
    /// Takes the rows of `ids` that are still `declaring` for this transaction to write
    /// out, and returns them; the others were written by someone else. On PostgreSQL a
    /// concurrent claim of the same row waits for this transaction and then finds it
    /// taken. The claimed incidents have no timeline and no timers yet.
    ///
    /// The rows are found by primary key alone: `status || ''` is an expression no index
    /// serves. With `status = 'declaring'`, PostgreSQL planned a bitmap AND with the
    /// `status` index whenever its statistics were older than the burst (they said a few
    /// hundred rows were `declaring`; the index held thousands of entries, live and dead),
    /// and that claim of four rows was the largest cost in PostgreSQL during the declare
    /// benchmark (a mean of 1.2 ms, 110 pages read per call). SQLite, without statistics,
    /// can make the same choice (see `store::still_pending`).
    pub async fn claim_declarations(&mut self, ids: &[IncidentId]) -> Result<Vec<IncidentId>> {
        let mut claimed = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(super::tx::MAX_ROWS_PER_INSERT) {
            let sql = format!(
                "update incidents set status = 'investigating', declaration = null \
                 where status || '' = 'declaring' and id in {} returning id",
                values_list(self.backend, 1, chunk.len())
            );
            let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql));
            for id in chunk {
                query = query.bind(id.0);
            }
            let rows: Vec<(i64,)> = query.fetch_all(&mut *self.tx).await?;
            claimed.extend(rows.into_iter().map(|(id,)| IncidentId(id)));
        }
        claimed.sort();
        for id in &claimed {
            self.fresh.add(*id);
        }
        Ok(claimed)
    }

    /// Deletes a `declaring` row the domain refused after all (its number is not
    /// reused; nothing else was written for it).
    pub async fn drop_declaration(&mut self, id: IncidentId) -> Result<()> {
        sqlx::query("delete from incidents where id = $1 and status = 'declaring'")
            .bind(id.0)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }
}

impl Store {
    /// [`StoreTx::insert_declarations`] as ONE statement committed on its own, without a
    /// transaction around it (`begin` and `commit` are two more round trips to the
    /// writer, on the acknowledgement's critical path). At most
    /// [`super::tx::MAX_ROWS_PER_INSERT`] declarations, so the statement is all or nothing.
    pub async fn insert_declarations_now(
        &self,
        declarations: &[Declaration],
        now: DateTime<Utc>,
    ) -> Result<Vec<IncidentId>> {
        assert!(
            declarations.len() <= super::tx::MAX_ROWS_PER_INSERT,
            "one statement holds at most MAX_ROWS_PER_INSERT declarations"
        );
        let _turn = self.writer_turn().await;
        insert_rows(self.backend, self.pool(), declarations, now).await
    }

    /// Declarations acknowledged before `before` and still not written out (a process
    /// died between its two transactions), oldest first, at most `limit`.
    pub async fn pending_declarations(
        &self,
        before: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<PendingDeclaration>> {
        let rows: Vec<(i64, Option<String>, i64)> = sqlx::query_as(
            "select id, declaration, created_at_ms from incidents \
             where status = 'declaring' and created_at_ms < $1 order by id limit $2",
        )
        .bind(ms(before))
        .bind(limit)
        .fetch_all(self.read_pool())
        .await?;
        rows.into_iter()
            .map(|(id, doc, at)| {
                Ok(PendingDeclaration {
                    id: IncidentId(id),
                    declaration: decode("declaration", doc.as_deref().unwrap_or("null"))?,
                    at: from_ms(at),
                })
            })
            .collect()
    }
}
